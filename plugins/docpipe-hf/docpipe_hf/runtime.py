"""What the docpipe-hf blocks share: params for precision and device, model folders,
length-sorted sub-batches and padding.

torch and transformers are imported inside functions, never when the plugin loads:
``docpipe blocks`` lists the blocks without paying their two-second import, and a worker
imports them only after the engine has set its thread limits.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from docpipe.errors import MissingDependency

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "bf16", "int8"]
DeviceName = Literal["auto", "cpu", "cuda"]

#: environment variable naming the folder that holds the models docpipe builds (``models/``)
MODELS_ENV = "DOCPIPE_MODELS"


class ModelParams(BaseModel):
    """Params every model block takes: numeric precision and device."""

    model_config = ConfigDict(extra="forbid")

    precision: Precision = Field(
        default="fp32",
        description=(
            "fp32: as trained. int8: dynamic quantization of every Linear layer (weights int8, "
            "activations quantized on the fly), CPU only, about 1.5-2x faster on CPU. bf16: the "
            "weights cast to bfloat16; halves memory and is fast on GPUs and CPUs with native "
            "bf16 (AVX512-BF16, AMX), but several times slower than fp32 on CPUs without it."
        ),
    )
    device: DeviceName = Field(
        default="auto",
        description="auto: CUDA when torch sees a GPU (and precision is not int8), else CPU",
    )

    @model_validator(mode="after")
    def _int8_runs_on_cpu(self) -> ModelParams:
        if self.precision == "int8" and self.device == "cuda":
            raise ValueError("precision 'int8' (dynamic quantization) runs on CPU only; "
                             "use precision 'bf16' or 'fp32' with device 'cuda'")
        return self


def models_root() -> Path:
    """The folder of the models docpipe builds: ``$DOCPIPE_MODELS``, else the ``models/``
    folder of the checkout this plugin is installed from (editable install)."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "models"


def model_dir(path: str | os.PathLike[str], block: str, hint: str) -> Path:
    """``path`` as a model folder (one holding ``config.json``), or :class:`MissingDependency`
    naming the path and, in ``hint``, how to get one. Nothing is ever downloaded."""
    p = Path(path).expanduser()
    if not p.exists():
        problem = "does not exist"
    elif not p.is_dir():
        problem = "is not a folder"
    elif not (p / "config.json").is_file():
        problem = "has no config.json (not a folder saved with save_pretrained)"
    else:
        return p.resolve()
    raise MissingDependency(f"block '{block}': model folder {p} {problem}. {hint}")


def quiet_transformers() -> None:
    """No progress bars or advisory log lines from transformers in worker output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def resolve_device(device: str, precision: str) -> str:
    """The torch device to use: ``auto`` is CUDA when torch sees one (int8 stays on CPU)."""
    import torch

    if device == "auto":
        return "cuda" if precision != "int8" and torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise MissingDependency(
            f"device 'cuda' was asked for but torch {torch.__version__} sees no CUDA device: "
            "install the CUDA build of torch (README, 'Your own models, GPUs') or use device 'auto'")
    return device


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` (CPU), with one weight scale per
    output channel: on the document-type classifier's held-out texts per-channel scales
    agreed with fp32 on 97-99% of the texts, one scale per tensor on 90-95%, at the same
    speed. torch marks the eager ``torch.ao.quantization`` API deprecated in favour of
    torchao but still ships it; its warnings are silenced here, where the call is deliberate."""
    import torch

    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as exc:  # a future torch without the eager API
        raise MissingDependency(
            f"precision 'int8' needs torch.ao.quantization.quantize_dynamic, which torch "
            f"{torch.__version__} does not have; use precision 'fp32' or 'bf16'") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                dtype=torch.qint8)


def prepare(model: Any, precision: str, device: str) -> Any:
    """``model`` in eval mode at ``precision`` on ``device``."""
    import torch

    model.eval()
    if precision == "int8":
        model = quantize_int8(model)
    elif precision == "bf16":
        model = model.to(torch.bfloat16)
    return model.to(device)


def sorted_batches(lengths: Sequence[int], size: int) -> Iterator[list[int]]:
    """Indices of ``lengths`` longest first, cut into runs of ``size``: sequences of similar
    length share a forward pass, so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    for start in range(0, len(order), size):
        yield order[start:start + size]


def pad(seqs: Sequence[Sequence[int]], pad_id: int, device: str,
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` tensors for token id lists."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids.to(device), mask.to(device)


def clip_text(text: str, max_tokens: int, chars_per_token: int = 16) -> str:
    """The start of ``text`` that can hold its first ``max_tokens`` tokens, whitespace runs
    collapsed to one space. Cutting before tokenizing keeps a 500-page document as cheap as a
    one-page one; 16 characters per token is several times the usual 4-5, so the cut never
    falls inside the part a model sees unless the text is made of very long tokens."""
    head = text[: max_tokens * chars_per_token * 4]  # room for layout whitespace
    return " ".join(head.split())[: max_tokens * chars_per_token]
