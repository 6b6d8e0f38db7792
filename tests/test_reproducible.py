"""The stages' bytes do not depend on the machine: the upstream stages run AVX2 kernels on any x86-64 CPU and
give the same vectors on any thread count; train@ runs on params' cpu_threads and repeats itself."""
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
X86 = platform.machine().lower() in ("x86_64", "amd64")


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def native_capability() -> str:
    return run_python("import torch; print(torch.backends.cpu.get_cpu_capability())")


ENCODE = """
import hashlib, torch
from pipeline.runtime.reproducible import portable_cpu_numerics
portable_cpu_numerics(log=lambda *a: None)
torch.set_num_threads({threads})
from pipeline.tokenizers.embedding import encode, load_encoder
texts = ["Toy Story (1995). Animation Children's Comedy.", "GoldenEye (1995). Action Adventure Thriller."] * 40
vectors = encode(load_encoder("packaged:all-MiniLM-L6-v2", "cpu"), texts, batch_size=16, normalize=True,
                 progress=False)
print(torch.backends.cpu.get_cpu_capability(), hashlib.md5(vectors.tobytes()).hexdigest())
"""


@pytest.mark.skipif(not X86, reason="the AVX2 cap is for x86-64 CPUs")
def test_text_vectors_are_the_same_bytes_on_one_and_two_threads_under_the_avx2_cap():
    if native_capability() == "DEFAULT":
        pytest.skip("this CPU has no AVX2")
    one, two = run_python(ENCODE.format(threads=1)), run_python(ENCODE.format(threads=2))
    assert one.split()[0] == "AVX2"
    assert one == two


@pytest.mark.skipif(not X86, reason="the AVX2 cap is for x86-64 CPUs")
def test_the_cap_called_after_torch_chose_its_kernels_is_refused():
    if native_capability() in ("DEFAULT", "AVX2"):
        pytest.skip("this CPU's own kernels are AVX2 or lower: nothing to tell apart")
    code = ("import torch; torch.ones(2) + 1; torch.backends.cpu.get_cpu_capability()\n"
            "from pipeline.runtime.reproducible import portable_cpu_numerics\n"
            "try:\n    portable_cpu_numerics()\nexcept RuntimeError as e:\n    print('refused:', e)")
    assert run_python(code).startswith("refused: portable_cpu_numerics() came after torch chose its")


def trained_weights_md5(out_dir) -> str:
    """md5 of best.safetensors after a tiny fp32 training on 2 threads, in a fresh process."""
    return run_python(f"""
import hashlib, torch
torch.set_num_threads(2)
from pipeline.config import TrainConfig
from pipeline.training.trainer import Trainer
from tests.test_tiger import pattern_split, tiny_tiger
cfg = TrainConfig(epochs=2, batch_size=16, warmup_steps=2, beam_size=10, precision="fp32")
Trainer(tiny_tiger(), pattern_split(40), pattern_split(8, start=5), cfg, "{out_dir}", seed=0, device="cpu",
        log=lambda *a: None).fit()
print(hashlib.md5(open("{out_dir}/best.safetensors", "rb").read()).hexdigest())
""")


def test_training_repeats_its_bytes_on_the_same_thread_count(tmp_path):
    """The setting cpu_threads fixes is enough: two trainings on 2 threads write identical weights."""
    assert trained_weights_md5(tmp_path / "a") == trained_weights_md5(tmp_path / "b")


def test_the_quantiser_backward_repeats_on_two_threads_when_items_share_codes():
    """Codebook gradients repeat bit for bit on two threads. An indexed lookup (``book[c]``) accumulated them with
    atomic adds whose order varied from pass to pass (docs/performance.md, "Reproducibility"), so ETEGRec, which
    trains the codebooks with the recommender, wrote other weights on every run."""
    import hashlib

    import torch

    from pipeline.tokenizers.rqvae import RQVAE, RQVAEConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = RQVAE(RQVAEConfig(in_dim=384))  # the default tokenizer's sizes: 384 -> 512 -> 256 -> 128 -> e = 128
        model.init_codebooks(torch.randn(1024, 384), generator=torch.Generator().manual_seed(0), iters=2)
        items = torch.randn(256, 384)
        items[:128] = items[128:]  # as a batch of targets: many items pick the same codes
        digests = set()
        for _ in range(4):
            model.zero_grad()
            model(items)["loss"].backward()
            digests.add(hashlib.sha256(model.codebooks.grad.numpy().tobytes()).hexdigest())
        assert len(digests) == 1, f"{len(digests)} different codebook gradients in 4 identical passes"
    finally:
        torch.set_num_threads(threads)
