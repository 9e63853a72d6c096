"""Typed schemas for every config group, with range checks: a bad value exits 2 in one line.

Why pydantic and not OmegaConf structured configs in Hydra's ConfigStore: structured configs check
types but not ranges (`selector.bins=0`, `optim.lr=-1`), their errors surface at composition as
multi-line Hydra traces, and typing each YAML file against a dataclass duplicates the defaults.
Here a schema states types and ranges only; every value (every default) lives in conf/. Every field
is required, so a YAML file that drops a key fails the test that composes every option
(tests/test_config.py); unknown keys are rejected. `validate_stage(cfg, stage)` runs before any
work or output; the first problem becomes a UserError naming the key.

A selector is validated by the schema of its `_target_`; a new selector with no schema here is
checked against its constructor's signature (unknown keys, annotated types), so adding a selector
stays one class plus one YAML file.
"""
from __future__ import annotations

import inspect
from typing import Any, Literal, Mapping, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from typing_extensions import Annotated

from codeselect.errors import UserError

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Prob = Annotated[float, Field(gt=0, le=1)]
Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
# Lightning's device strings: auto, -1 (all), a count ("2") or a list of indices ("0,1")
DevicesStr = Annotated[str, Field(pattern=r"^(auto|-1|\d+|\d+(,\s*\d+)+,?|\d+,)$")]


class Strict(BaseModel):
    """No unknown keys, no coercion ("3" is not 3, 3.0 is not an int, true is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Open(BaseModel):
    """Known keys typed; extra keys allowed (groups other work is extending right now)."""

    model_config = ConfigDict(extra="allow", strict=True)


# ----------------------------------------------------------------------------- shared
class WandbLogger(Strict):
    kind: Literal["wandb"]
    project: str
    group: Optional[str]
    tags: list[str]
    mode: Optional[Literal["online", "offline", "disabled"]]
    artifacts: bool
    upload_model: bool


class CSVLogger(Strict):
    kind: Literal["csv"]


class NoLogger(Strict):
    kind: Literal["none"]


Logger = Annotated[Union[WandbLogger, CSVLogger, NoLogger], Field(discriminator="kind")]


class Fields(Strict):
    id: Optional[str]
    instruction: str
    response: str
    input: Optional[str]
    messages: Optional[str]


# ----------------------------------------------------------------------------- select
class Decontamination(Strict):
    ngram: PosInt
    benchmarks: list[Literal["humaneval", "mbpp"]]
    humaneval: Optional[str]
    mbpp: Optional[str]
    parts: list[Literal["prompt", "canonical_solution", "test_inputs"]]
    fields: list[Literal["instruction", "response"]]


class Deduplication(Strict):
    method: Literal["minhash", "exact"]
    threshold: Prob
    num_perm: PosInt
    shingle: PosInt


class PoolFile(Strict):
    source: Literal["file"]
    path: str
    split: str
    fields: Fields
    decontaminate: Literal["report", "remove", "off", False]  # YAML reads a bare `off` as false
    decontamination: Decontamination
    dedup: Literal["report", "remove", "off", False]
    deduplication: Deduplication


class PoolStdlib(PoolFile):
    source: Literal["stdlib"]  # type: ignore[assignment]
    path: Optional[str]  # type: ignore[assignment]
    min_pairs: PosInt


Pool = Annotated[Union[PoolFile, PoolStdlib], Field(discriminator="source")]


class Encoder(Open):
    name: str
    model: str
    batch_size: PosInt
    max_length: Optional[PosInt]
    dtype: Literal["float32", "bfloat16", "float16"]
    backend: Literal["torch", "openvino"]
    shard_size: PosInt
    devices: Optional[list[str]]
    show_progress: bool


class Precomputed(Open):
    name: Literal["precomputed"]
    path: str


def _embedding_kind(value: Any) -> str:
    return "precomputed" if isinstance(value, Mapping) and value.get("name") == "precomputed" else "encoder"


Embedding = Annotated[Union[Annotated[Precomputed, Tag("precomputed")], Annotated[Encoder, Tag("encoder")]],
                      Discriminator(_embedding_kind)]


class Metrics(Strict):
    mmd_sample: PosInt


class SelectorBase(Strict):
    target: str = Field(alias="_target_")
    name: str

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class Ours(SelectorBase):
    max_iter: NonNegInt
    temperature: PosFloat
    lr: PosFloat
    balance: NonNegFloat
    init: Literal["random", "fps"]
    precision: Literal["auto", "bf16", "fp32"]
    screen_candidates: PosInt
    chunk_size: PosInt
    kk_cache_mb: NonNegFloat
    accelerator: Optional[str]
    devices: Union[Annotated[int, Field(ge=-1), AfterValidator(lambda v: _not_zero(v))], DevicesStr,
                   list[NonNegInt]]
    strategy: str
    deterministic: bool
    mapping_candidates: Optional[PosInt]
    mapping_chunk_size: PosInt
    progress: bool


class KCenter(SelectorBase):
    device: Optional[Device]
    dtype: Literal["float32", "float64"]
    chunk_size: PosInt
    candidates: PosInt
    progress: bool


class DQ(SelectorBase):
    bins: PosInt
    lam: NonNegFloat
    device: Optional[Device]
    dtype: Literal["float32", "float64"]
    block: PosInt
    progress: bool


class Random(SelectorBase):
    pass


class TopScore(SelectorBase):
    scorer: Any
    scores_path: Optional[str]
    progress: bool


class Deita(TopScore):
    threshold: Annotated[float, Field(ge=-1, le=1)]
    block_size: PosInt


SELECTORS: dict[str, type[SelectorBase]] = {
    "codeselect.selectors.ours.ParametricSelector": Ours,
    "codeselect.selectors.kcenter.KCenterSelector": KCenter,
    "codeselect.selectors.dq.DQSelector": DQ,
    "codeselect.selectors.random_subset.RandomSelector": Random,
    "codeselect.selectors.ifd.IFDSelector": TopScore,
    "codeselect.selectors.ppl.PPLSelector": TopScore,
    "codeselect.selectors.deita.DeitaSelector": Deita,
}


class SelectionReport(Strict):
    enabled: bool
    tokenizer: str
    pool_sample: PosInt
    table_rows: NonNegInt
    examples: NonNegInt


class SelectStage(Strict):
    data: Pool
    embedding: Embedding
    selector: dict[str, Any]   # by its _target_: see SELECTORS
    scorer: Optional[dict[str, Any]] = None  # only the LM-scored selectors pull a scorer in
    logger: Logger
    sample_num: Annotated[int, Field(gt=0)]
    seed: NonNegInt
    cache_dir: str
    device: Device
    metrics: Metrics
    plot: bool
    report: SelectionReport


# ----------------------------------------------------------------------------- train
class TrainData(Strict):
    source: Literal["file"]
    path: str
    split: str
    fields: Fields
    max_length: PosInt
    mode: Literal["pack", "pad"]
    batching: Literal["samples", "best_fit"]
    isolate: bool
    shuffle: bool
    chat_template: Literal["paper", "tokenizer"]
    num_workers: NonNegInt
    pad_to_multiple_of: PosInt


class Lora(Strict):
    enabled: bool
    r: PosInt
    alpha: PosFloat
    dropout: Annotated[float, Field(ge=0, lt=1)]
    target_modules: Union[str, list[str]]


class ModelBase(Strict):
    name: str
    dtype: Dtype
    save_dtype: Optional[Dtype]
    attn_implementation: str
    gradient_checkpointing: bool
    lora: Lora


class ModelHF(ModelBase):
    source: Literal["hf"]
    path: str


class ModelTiny(ModelBase):
    source: Literal["tiny"]
    vocab_size: Annotated[int, Field(ge=260)]  # above the byte alphabet + special tokens
    hidden_size: PosInt
    num_layers: PosInt
    num_heads: PosInt
    intermediate_size: PosInt
    max_position_embeddings: PosInt
    seed: NonNegInt


class ModelSmolLM2(ModelBase):
    source: Literal["smollm2"]


Model = Annotated[Union[ModelHF, ModelTiny, ModelSmolLM2], Field(discriminator="source")]


class Single(Strict):
    kind: Literal["single"]


class DDP(Strict):
    kind: Literal["ddp"]
    find_unused_parameters: bool


class FSDP(Strict):
    kind: Literal["fsdp"]
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"]
    cpu_offload: bool
    state_dict_type: Literal["sharded", "full"]
    mixed_precision: Optional[dict[str, Optional[str]]]


class DeepSpeed(Strict):
    kind: Literal["deepspeed"]
    config: dict[str, Any]


Strategy = Annotated[Union[Single, DDP, FSDP, DeepSpeed], Field(discriminator="kind")]


class Optim(Strict):
    lr: PosFloat
    weight_decay: NonNegFloat
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)]
    warmup_steps: NonNegInt
    scheduler: Literal["cosine", "constant"]
    master_dtype: Optional[Literal["float32", "bfloat16", "float16"]]


def _not_zero(value: Any) -> Any:
    if value == 0 and not isinstance(value, bool):
        raise ValueError("must not be 0 (a positive count, -1 for all, or auto)")
    return value


class Trainer(Strict):
    """The Trainer keys conf/stage/train.yaml sets, typed; any other Lightning Trainer keyword is
    accepted by name (checked against `lightning.pytorch.Trainer`'s signature)."""

    model_config = ConfigDict(extra="allow", strict=True)
    max_epochs: Annotated[int, Field(ge=-1)]
    max_steps: Annotated[int, Field(ge=-1)]
    accumulate_grad_batches: PosInt
    precision: Union[str, int]
    gradient_clip_val: Optional[NonNegFloat]
    accelerator: str
    devices: Union[Annotated[int, Field(ge=-1), AfterValidator(_not_zero)], DevicesStr, list[NonNegInt]]
    num_nodes: PosInt
    log_every_n_steps: PosInt
    enable_progress_bar: bool
    enable_model_summary: bool


class TrainStage(Strict):
    data: TrainData
    model: Model
    strategy: Strategy
    logger: Logger
    seed: NonNegInt
    cache_dir: str
    batch_size: PosInt
    loss_tokens: Literal["all_ranks", "per_rank"]
    optim: Optim
    trainer: Trainer
    resume: Union[None, bool, str]
    checkpoint_every_n_steps: NonNegInt
    dry_run: bool


# ----------------------------------------------------------------------------- evaluate
class Benchmark(Strict):
    name: Literal["humaneval", "mbpp"]
    path: Optional[str]
    download: bool
    fallback: bool


class BackendHF(Open):
    name: Literal["hf"]
    device: str
    dtype: Dtype
    attn_implementation: str
    batch_size: PosInt
    trust_remote_code: bool


class BackendVLLM(Open):
    name: Literal["vllm"]
    tensor_parallel_size: PosInt
    dtype: str
    max_model_len: Optional[PosInt]
    gpu_memory_utilization: Prob
    enable_prefix_caching: bool
    batch_size: PosInt
    trust_remote_code: bool
    python: str
    device: Literal["auto", "cpu", "cuda"]
    engine_args: dict[str, Any]
    cpu: dict[str, Any]


Backend = Annotated[Union[BackendHF, BackendVLLM], Field(discriminator="name")]


class Generation(Strict):
    n_samples: PosInt
    temperature: NonNegFloat
    top_p: Prob
    max_new_tokens: PosInt
    prompt: Literal["auto", "chat", "direct"]
    add_special_tokens: bool
    instruction_prefix: str
    response_prefix: str
    extra_stop: list[str]


class Sandbox(Strict):
    mode: Literal["auto", "namespaces", "userns", "rlimits"]
    memory_mb: PosInt
    cpu_s: PosInt
    nproc: PosInt
    fsize_mb: PosInt
    nofile: PosInt
    tmpfs_mb: PosInt
    output_mb: PosInt
    group_memory_mb: PosInt


class Sanitizer(Strict):
    timeout_s: PosFloat
    max_kb: PosInt


class EvalPlus(Strict):
    min_time_limit: PosFloat
    gt_time_limit_factor: PosFloat


class EvaluateStage(Strict):
    benchmark: Benchmark
    backend: Backend
    model: dict[str, Any]      # the model to generate with (model=hf model.path=...), if any
    logger: Logger
    seed: NonNegInt
    cache_dir: str
    samples: Optional[str]
    sanitize: Literal["auto", True, False]
    limit: Optional[PosInt]
    root: str
    model_id: Optional[str]
    workers: Optional[PosInt]
    generation: Generation
    sandbox: Sandbox
    sanitizer: Sanitizer
    evalplus: EvalPlus


STAGE_SCHEMAS: dict[str, type[Strict]] = {"select": SelectStage, "train": TrainStage,
                                          "evaluate": EvaluateStage}


# ----------------------------------------------------------------------------- checking
def _message(err: Mapping[str, Any]) -> str:
    kind, msg = err["type"], str(err["msg"])
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "missing key"
    msg = msg.replace("Input should be", "must be").replace("Value error, ", "")
    if kind == "string_pattern_mismatch":  # the one pattern: Lightning's device strings
        msg = "must be auto, -1, a device count or device indices ('0,1')"
    if kind == "greater_than" and err.get("ctx", {}).get("gt") == 0:
        msg = "must be positive"
    if "input" in err and kind not in ("union_tag_invalid", "union_tag_not_found"):
        msg += f", got {err['input']!r}"
    return msg


_BRANCH_TAGS = {"wandb", "csv", "none", "file", "stdlib", "hf", "tiny", "smollm2", "single", "ddp",
                "precomputed", "encoder",
                "fsdp", "deepspeed", "vllm", "int", "str", "bool", "float", "constrained-int",
                "constrained-float", "list[int]", "literal"}


def _is_branch(part: Any) -> bool:
    """Union branch names pydantic puts in an error's path (tag values, class and type names)."""
    return isinstance(part, str) and (part in _BRANCH_TAGS or part[:1].isupper() or "[" in part
                                      or part.startswith(("constrained-", "function-", "lax-or-strict")))


def _first_error(exc: ValidationError, prefix: str) -> UserError:
    # A union reports one error per branch: the one that names the deepest key is the useful one.
    err = max(exc.errors(), key=lambda e: len([p for p in e["loc"] if not _is_branch(p)]))
    key = ".".join([prefix] * bool(prefix) + [str(p) for p in err["loc"] if not _is_branch(p)])
    return UserError(_message(err), key=key or None)


def check(schema: type[BaseModel], values: Mapping[str, Any], prefix: str = "") -> None:
    """Validate `values` against `schema`; the first problem as a UserError naming the key."""
    try:
        schema.model_validate(dict(values))
    except ValidationError as exc:
        raise _first_error(exc, prefix) from None


def _check_trainer_keys(trainer: Mapping[str, Any], prefix: str) -> None:
    from lightning.pytorch import Trainer as PLTrainer

    known = set(inspect.signature(PLTrainer.__init__).parameters) - {"self"}
    extra = sorted(set(trainer) - set(Trainer.model_fields))  # typed above; the rest by name
    for key in extra:
        if key not in known:
            raise UserError("unknown key (not a lightning.pytorch.Trainer argument)",
                            key=f"{prefix}trainer.{key}")
    for key in ("strategy", "callbacks", "logger", "default_root_dir"):
        if key in trainer:
            raise UserError("set by codeselect (use strategy=, logger=, hydra.run.dir=)",
                            key=f"{prefix}trainer.{key}")


def _check_by_signature(target: str, node: Mapping[str, Any], key: str) -> None:
    """A selector without a schema: its constructor's parameters and annotations."""
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception as exc:  # noqa: BLE001 - any import problem is the user's _target_
        raise UserError(f"cannot import {target!r} ({str(exc).splitlines()[0]})", key=f"{key}._target_") from None
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for name in node:
            if name != "_target_" and name not in params:
                raise UserError("unknown key", key=f"{key}.{name}")
    import typing

    from pydantic import create_model

    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: names were checked above
        return
    fields: dict[str, Any] = {name: (hints[name], ...) for name in node if name in hints and name != "return"}
    model = create_model(f"{cls.__name__}Config", __config__=ConfigDict(strict=True, arbitrary_types_allowed=True),
                         **fields)
    check(model, {name: node[name] for name in fields}, key)


def check_selector(node: Mapping[str, Any], key: str = "selector") -> None:
    """The selector node against the schema of its `_target_` (or its constructor)."""
    target = node.get("_target_")
    if not isinstance(target, str):
        raise UserError("missing key", key=f"{key}._target_")
    schema = SELECTORS.get(target)
    if schema is None:
        _check_by_signature(target, node, key)
    else:
        check(schema, node, key)


def _check_scorer(node: Any, selector: Mapping[str, Any], key: str = "scorer") -> None:
    from codeselect.scoring.config import single_scorer, split_scorers

    if node is None:
        return
    if selector.get("_target_", "").endswith("DeitaSelector"):
        split_scorers(node, key)
    else:
        single_scorer(node, key)


def plain(cfg: Any) -> dict[str, Any]:
    """A resolved plain dict of a DictConfig (interpolation errors are user errors too)."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise UserError(str(exc).splitlines()[0], key=getattr(exc, "full_key", None)) from None


# `???` values a stage may leave open: evaluate.py with samples= needs no model
MAY_BE_MISSING = {"evaluate": {"model.path"}}


def _check_missing(cfg: Any, stage: str) -> None:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        for key in sorted(OmegaConf.missing_keys(cfg) - MAY_BE_MISSING.get(stage, set())):
            raise UserError("missing value: give it on the command line", key=key)


def validate_stage(cfg: Any, stage: str, section: Any = ()) -> dict[str, Any]:
    """Check a stage's config (select | train | evaluate); returns it as a plain, resolved dict.

    `section`: the keys that came from the stage's package in the pipeline's tree, so that an
    error names them as the user wrote them (`train.optim.lr`, but `model.dtype`)."""
    try:
        _check_missing(cfg, stage)
        values = plain(cfg)
        check(STAGE_SCHEMAS[stage], {k: v for k, v in values.items() if k != "selector"} | (
            {"selector": {}} if stage == "select" else {}))
        if stage == "select":
            check_selector(values["selector"])
            _check_scorer(values.get("scorer"), values["selector"])
        if stage == "train":
            _check_trainer_keys(values["trainer"], "")
    except UserError as exc:
        if exc.key and exc.key.split(".")[0] in set(section):
            raise UserError(exc.reason, file=exc.file, line=exc.line, key=f"{stage}.{exc.key}") from None
        raise
    return values
