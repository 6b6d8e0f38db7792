"""One registry of models: the name a params block gives in ``model:`` -> the class that implements it.

Adding a method: write its model file (a ``Recommender`` subclass declaring ``reads``, ``config_class``,
``sizes`` and ``from_inputs``), import it here and give it a name (README, "Adding a method").
"""
from __future__ import annotations

from pipeline.config import ParamsError
from pipeline.models.base import ModelInputs, Recommender
from pipeline.models.decor import Decor
from pipeline.models.discrec import Discrec
from pipeline.models.etegrec import Etegrec
from pipeline.models.popularity import MostPopular
from pipeline.models.sasrec import SASRec
from pipeline.models.tiger import Tiger

MODELS: dict[str, type[Recommender]] = {
    "popularity": MostPopular,
    "sasrec": SASRec,
    "tiger": Tiger,
    "decor": Decor,
    "etegrec": Etegrec,
    "discrec": Discrec,
}


class MethodError(ParamsError):
    """A methods.<name> block of params.yaml (or a model folder) that cannot be built."""


def model_class(name: str, where: str) -> type[Recommender]:
    if name not in MODELS:
        raise MethodError(f"{where}.model = {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name]


def name_of(cls: type[Recommender]) -> str:
    return next(name for name, c in MODELS.items() if c is cls)


def build(name: str, backbone: dict, inputs: ModelInputs, max_history: int, where: str) -> Recommender:
    """The model ``name`` with the ``backbone`` settings of a params block, sized by ``inputs``.

    ``where`` names the block in messages (``params.yaml: methods.tiger``)."""
    cls = model_class(name, where)
    sizes = cls.sizes(inputs, max_history)
    fixed = sorted(set(backbone) & set(sizes))
    if fixed:
        raise MethodError(f"{where}.backbone: {fixed} come from the data, not from params.yaml")
    try:
        config = cls.config_class.from_dict({**sizes, **backbone})
    except (TypeError, ValueError) as exc:
        raise MethodError(f"{where}.backbone: {exc}") from None
    return cls.from_inputs(config, inputs)
