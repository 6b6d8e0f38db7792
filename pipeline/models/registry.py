"""One registry of models: the name a params block gives in ``model:`` -> the class that implements it.

Each entry names the module and class, imported when a stage asks for that model: a stage imports the code
of its own method and no other, so its code dependencies (dvc.yaml, ``pipeline.code_deps``) stay exact,
and training the popularity baseline never loads T5.

Adding a method: write its model file (a ``Recommender`` subclass declaring ``reads``, ``config_class``,
``sizes`` and ``from_inputs``), give it a name here and a params block (docs/adding_a_method.md).
"""
from __future__ import annotations

import importlib

from pipeline.config import ParamsError
from pipeline.models.base import ModelInputs, Recommender

MODELS: dict[str, str] = {
    "popularity": "pipeline.models.popularity:MostPopular",
    "sasrec": "pipeline.models.sasrec:SASRec",
    "tiger": "pipeline.models.tiger.model:Tiger",
    "decor": "pipeline.models.decor:Decor",
    "etegrec": "pipeline.models.etegrec.model:Etegrec",
    "discrec": "pipeline.models.discrec.model:Discrec",
}


class MethodError(ParamsError):
    """A methods.<name> block of params.yaml (or a model folder) that cannot be built."""


def model_module(name: str, where: str) -> str:
    """The module that implements model ``name`` (its code, with its imports, is the method's code)."""
    if name not in MODELS:
        raise MethodError(f"{where}.model = {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name].split(":")[0]


def model_class(name: str, where: str) -> type[Recommender]:
    module, cls = MODELS[name].split(":") if name in MODELS else (model_module(name, where), "")
    return getattr(importlib.import_module(module), cls)


def name_of(cls: type[Recommender]) -> str:
    return next(name for name, entry in MODELS.items() if entry == f"{cls.__module__}:{cls.__qualname__}")


def check_backbone(name: str, backbone: dict, where: str) -> None:
    """Check a params block's ``backbone`` against model ``name``'s settings when a stage starts, before it
    reads data or writes anything: a key the model does not know or one that comes from the data, a value of
    the wrong type or out of range. (Checks across settings and the data's sizes run in :func:`build`.)"""
    cls = model_class(name, where)
    fixed = sorted(set(backbone) & set(cls.data_settings))
    if fixed:
        raise MethodError(f"{where}.backbone: {fixed} come from the data, not from params.yaml")
    try:
        cls.config_class.check_settings(backbone)
    except ValueError as exc:
        raise MethodError(f"{where}.backbone: {exc}") from None


def build(name: str, backbone: dict, inputs: ModelInputs, max_history: int, where: str) -> Recommender:
    """The model ``name`` with the ``backbone`` settings of a params block, sized by ``inputs``.

    ``where`` names the block in messages (``params.yaml: methods.tiger``)."""
    check_backbone(name, backbone, where)
    cls = model_class(name, where)
    sizes = cls.sizes(inputs, max_history)
    try:
        config = cls.config_class.from_dict({**sizes, **backbone})
    except (TypeError, ValueError) as exc:
        raise MethodError(f"{where}.backbone: {exc}") from None
    return cls.from_inputs(config, inputs)
