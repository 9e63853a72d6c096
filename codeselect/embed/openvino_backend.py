"""`embedding.backend=openvino`: the encoder's transformer run by OpenVINO on the CPU.

The Hugging Face module inside a loaded SentenceTransformer is converted in memory with
`openvino.convert_model` (dynamic batch and sequence length) and compiled for the CPU at the
configured precision: `embedding.dtype=float32` infers in f32 (the same vectors as torch to ~1e-7),
`bfloat16` in bf16 where the CPU has native bf16 (AVX512_BF16 or AMX), with f32 inputs and outputs.
Only the transformer's forward is replaced: sentence-transformers still tokenizes (same truncation),
sorts by length, batches and mean-pools (in float32, since the output is float32), so the rest of
the path is the default one. sentence-transformers' own `backend="openvino"` / `"onnx"` need
`optimum-intel` / `optimum[onnxruntime]`, whose current releases would replace this project's torch and
transformers (5.5 / 4.57 instead of 5.24); the direct use here needs only the `openvino` wheel.
Measured in benchmarks/results/encode.md, with the alternatives (bf16 autocast, bf16 weights).
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from codeselect.errors import UserError

log = logging.getLogger(__name__)

PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}


def check_available(dtype: str) -> None:
    """UserError when `openvino` is not installed or cannot run `dtype`."""
    if dtype not in PRECISIONS:
        raise UserError(f"embedding.backend=openvino runs {sorted(PRECISIONS)}, got {dtype!r}",
                        key="embedding.dtype")
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise UserError("embedding.backend=openvino needs the openvino package: pip install openvino",
                        key="embedding.backend") from None


class OpenVINOTransformer(torch.nn.Module):
    """Stands in for the Hugging Face model: same call, `last_hidden_state` computed by OpenVINO."""

    def __init__(self, compiled: Any, config: Any, input_names: list[str]) -> None:
        super().__init__()
        self.compiled = compiled
        self.config = config  # sentence-transformers reads e.g. config.output_hidden_states
        self.input_names = input_names
        self.request = compiled.create_infer_request()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutput

        given = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)}
        out = self.request.infer({name: given[name].numpy() for name in self.input_names})
        hidden = torch.from_numpy(out[self.compiled.output(0)].copy())
        return BaseModelOutput(last_hidden_state=hidden)


def attach(model: Any, dtype: str) -> Any:
    """Replace `model`'s transformer forward by an OpenVINO-compiled copy (in place); returns `model`."""
    import openvino as ov

    module = model[0]
    hf = module.auto_model
    example = dict(model.tokenizer(["a b", "a longer example text"], padding=True, return_tensors="pt"))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's "converting a tensor to a Python boolean" notes
        ov_model = ov.convert_model(hf.eval(), example_input=example, share_weights=False)
    core = ov.Core()
    if dtype == "bfloat16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        log.warning("embeddings: this CPU has no native bf16; OpenVINO will infer in f32")
    compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": PRECISIONS[dtype],
                                                    "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    names = [port.get_any_name() for port in ov_model.inputs]
    unknown = set(names) - {"input_ids", "attention_mask", "token_type_ids"}
    if unknown:
        raise UserError(f"the converted encoder wants inputs {sorted(unknown)}; use embedding.backend=torch",
                        key="embedding.backend")
    wrapper = OpenVINOTransformer(compiled, hf.config, names)
    if isinstance(getattr(module, "model", None), torch.nn.Module):  # sentence-transformers >= 5
        module.model = wrapper
    else:
        module.auto_model = wrapper
    log.info("embeddings: OpenVINO %s on the CPU, %s inference, %d threads", ov.__version__,
             compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
             compiled.get_property("INFERENCE_NUM_THREADS"))
    return model
