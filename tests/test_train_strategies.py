"""Strategies as config: FSDP and DeepSpeed build and validate on CPU as far as the libraries allow;
the FSDP export gathers a full HF state dict; GPU-only runs skip with a reason."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codeselect.errors import UserError
from codeselect.train.strategies import build_strategy, decoder_layer_classes, deepspeed_config, is_sharded

REPO = Path(__file__).resolve().parents[1]
NEEDS_GPU = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="Lightning runs FSDP and DeepSpeed on CUDA GPUs only")


def strategy_cfg(name: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "strategy" / f"{name}.yaml"))


@pytest.fixture(scope="module")
def tiny_model(cache_dir: Path):
    from codeselect.train.models import load_model_and_tokenizer, tiny_checkpoint

    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(50)]
    path = tiny_checkpoint(texts, cache_dir, {"max_position_embeddings": 512})
    from omegaconf import OmegaConf

    model_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "tiny.yaml"))
    return load_model_and_tokenizer(str(path), model_cfg)


def test_fsdp_config_is_full_shard_wrapped_and_checkpointed_per_decoder_layer(tiny_model) -> None:
    from torch.distributed.fsdp import ShardingStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    model, _ = tiny_model
    layers = decoder_layer_classes(model)
    assert layers == {LlamaDecoderLayer}
    cfg = strategy_cfg("fsdp")
    strategy = build_strategy(cfg, layers)
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD and is_sharded(cfg)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert strategy.kwargs["use_orig_params"] is True
    explicit = build_strategy(dict(cfg, mixed_precision={"param_dtype": "bfloat16", "reduce_dtype": "float32",
                                                         "buffer_dtype": "bfloat16"}), layers)
    assert explicit.mixed_precision.param_dtype == torch.bfloat16
    assert explicit.mixed_precision.reduce_dtype == torch.float32
    with pytest.raises(UserError, match="param_dtype"):
        build_strategy(dict(cfg, mixed_precision={"param_dtype": "bf17"}), layers)


def test_fsdp_export_gathers_a_full_state_dict_that_reloads_as_hf(tiny_model, tmp_path: Path) -> None:
    """Wrap the SFT module with torch FSDP on CPU (gloo, one rank) using the strategy's own wrap
    policy, gather the full state dict and export it: the reloaded model computes the same logits."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from transformers import AutoModelForCausalLM

    from codeselect.train.checkpoint import fsdp_full_state_dict, hf_keys, save_hf
    from codeselect.train.module import SFTModule

    model, tok = tiny_model
    strategy = build_strategy(strategy_cfg("fsdp"), decoder_layer_classes(model))
    ids = torch.tensor([tok("def f(x):\n    return x + 1\n")["input_ids"]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        wrapped = FSDP(SFTModule(model), auto_wrap_policy=strategy.kwargs["auto_wrap_policy"],
                       device_id=torch.device("cpu"), use_orig_params=True)
        assert sum(isinstance(m, FSDP) for m in wrapped.modules()) == 3  # root + 2 decoder layers
        sd = hf_keys(model, fsdp_full_state_dict(wrapped))
    finally:
        dist.destroy_process_group()
    assert set(sd) == set(model.state_dict())
    save_hf(model, sd, tok, tmp_path / "checkpoint")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-5)


@pytest.mark.parametrize("name, stage", [("deepspeed", 3), ("deepspeed_zero2", 2)])
def test_deepspeed_zero_configs_validate_and_build(name: str, stage: int) -> None:
    pytest.importorskip("deepspeed")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    cfg = strategy_cfg(name)
    ds = deepspeed_config(cfg)  # validated by DeepSpeed's own ZeRO schema
    assert ds["zero_optimization"]["stage"] == stage
    strategy = build_strategy(cfg)
    assert isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3 == (stage == 3)
    assert is_sharded(cfg) == (stage == 3)
    if stage == 3:  # the HF export gathers 16-bit weights from the ZeRO-3 shards
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("change, key", [
    ({"overlap_comm": "maybe"}, "overlap_comm"),
    ({"no_such_option": 1}, "no_such_option"),
    ({"stage": 4}, "stage"),
])
def test_bad_deepspeed_config_is_a_user_error_naming_the_field(change: dict, key: str) -> None:
    pytest.importorskip("deepspeed")
    cfg = strategy_cfg("deepspeed")
    cfg["config"]["zero_optimization"].update(change)
    with pytest.raises(UserError, match=key):
        deepspeed_config(cfg)
    with pytest.raises(UserError, match="accumulate_grad_batches"):
        deepspeed_config({"config": {"gradient_accumulation_steps": 4, "zero_optimization": {"stage": 2}}})


def test_unknown_strategy_kind_is_a_user_error() -> None:
    with pytest.raises(UserError, match="strategy.kind"):
        build_strategy({"kind": "horovod"})


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def small_pool(path: Path, n: int = 64) -> Path:
    path.write_text("".join(json.dumps({"id": i, "instruction": f"Write function number {i}.",
                                        "response": f"def f{i}(x):\n    return x * {i}\n"}) + "\n"
                            for i in range(n)))
    return path


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_gpu_strategies_on_a_cpu_machine_exit_2_in_one_line(strategy: str, tmp_path: Path) -> None:
    out = run_cli(f"data.path={small_pool(tmp_path / 'pool.jsonl')}", "model=tiny", f"strategy={strategy}",
                  "logger=none", f"hydra.run.dir={tmp_path}/run", timeout=180)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "needs CUDA" in lines[0] and "strategy=single" in lines[0]


TINY_RUN = ["model=tiny", "batch_size=2", "trainer.accumulate_grad_batches=2", "trainer.max_steps=3",
            "optim.warmup_steps=1", "data.max_length=128", "logger=none", "checkpoint_every_n_steps=0",
            "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_and_exports_once(tmp_path: Path) -> None:
    out = run_cli(f"data.path={small_pool(tmp_path / 'pool.jsonl')}", "strategy=ddp", "trainer.accelerator=cpu",
                  "trainer.devices=2", *TINY_RUN, f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["world_size"] == 2 and info["steps"] == 3
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()


@NEEDS_GPU
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed", "deepspeed_zero2"])
def test_gpu_strategy_trains_and_exports_a_loadable_checkpoint(strategy: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = run_cli(f"data.path={small_pool(tmp_path / 'pool.jsonl')}", f"strategy={strategy}",
                  "trainer.devices=1", *TINY_RUN, f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["steps"] == 3 and info["final_loss"] is not None
    AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "checkpoint")


@pytest.mark.slow
def test_ddp_window_loss_over_all_ranks_equals_one_process_with_twice_the_batch(shared: Path,
                                                                                tmp_path: Path) -> None:
    """Two ranks of 4 samples per micro-batch see, per window, exactly the samples one process with 8 sees
    (micro-batch i of the stream goes to rank i % 2); with isolated packing the loss does not depend on
    how samples share rows, so `loss_tokens=all_ranks` must give that process's losses and gradients.
    `per_rank` (transformers 4.47.1) averages the ranks' own token means instead: a different number."""
    import gzip

    pool = tmp_path / "pool.jsonl"
    with gzip.open(shared / "data" / "instruct" / "code-instruct-15k.jsonl.gz", "rt") as fh:
        pool.write_text("".join(line for _, line in zip(range(32), fh)))  # 32 = 4 windows of 8, no top-up
    common = ["model=tiny", "trainer.accumulate_grad_batches=2", "trainer.max_epochs=1", "optim.lr=1e-3",
              "optim.warmup_steps=0", "data.max_length=128", "logger=none", "checkpoint_every_n_steps=0",
              "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", f"data.path={pool}"]
    runs = {}
    for name, extra in {"one": ["strategy=single", "batch_size=8"],
                        "all_ranks": ["strategy=ddp", "trainer.devices=2", "batch_size=4", "loss_tokens=all_ranks"],
                        "per_rank": ["strategy=ddp", "trainer.devices=2", "batch_size=4", "loss_tokens=per_rank"]}.items():
        out = run_cli(*common, *extra, f"hydra.run.dir={tmp_path / name}")
        assert out.returncode == 0, out.stderr[-3000:]
        runs[name] = json.loads((tmp_path / name / "train.json").read_text())
    one, both, per = runs["one"], runs["all_ranks"], runs["per_rank"]
    assert one["steps"] == both["steps"] == per["steps"] >= 2
    assert both["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert both["grad_norms"] == pytest.approx(one["grad_norms"], rel=1e-4)
    assert abs(per["losses"][0] - one["losses"][0]) > 1e-4 * one["losses"][0]
