"""The estimate of the GPU memory a training run needs, per GPU, before any weight is loaded: the formulas.

A 13B model that does not fit should fail in a second with what to change, not after minutes of loading (or
hours into a grid), so the plan is computed from the model's shape alone (:mod:`medtune.training.model_shape`:
exact parameter counts from the config, built on the meta device). :func:`estimate_memory` adds up what the
training loop holds at its peak; whether that fits, and what would, is :mod:`medtune.training.memory`'s job. Per
GPU, with P all parameters, A adapter parameters (r x (in + out) per linear but the head), L linear weights but
the head:

- full / galore: fp32 master 4P, fp32 gradients 4P, AdamW moments 8P (8-bit AdamW 2P; GaLore: 2 moments of
  r x max(m, n) and a projector r x min(m, n) per projected m x n matrix, full moments for the rest); torch's
  foreach AdamW adds a 4P buffer during its step. Under bf16/fp16 autocast autograd keeps the half-precision copy
  of every matmul weight (2 B each) until that layer's backward, and the backward runs inside autocast.
  FSDP2 (W > 1 GPUs) divides master, gradients and moments by W and gathers the root and two layers (in
  half precision under its mixed-precision policy, so autocast keeps no copies). DDP keeps a second copy of the
  gradients (its all-reduce buckets).
- lora / dora: frozen base 2P (4P on fp32 runs), fp32 adapters 4A + gradients 4A + moments 8A; qlora: NF4
  0.516 B per L weight (4 bit + double-quantised scales), the other weights fp32 (PEFT's k-bit preparation
  upcasts them), paged 8-bit AdamW (2A). knowtuning: the larger of its KA stage (its inner method) and its KC
  stage (TRL's DPO: fp32, chosen + rejected rows, logits at every position, an fp32 reference for ``full``); dpo:
  lora's weights with the global batch's chosen + rejected rows in one micro-batch and logits at every position.
- activations per decoder layer and token, from what autograd keeps for the backward (in the spirit of
  Korthikanti et al. 2022, for RMSNorm, SwiGLU, GQA and SDPA/flash attention, which keep no s^2 scores):
  2 x (4h [+ s h when the norms train]) + c (2q + 2kv) + 3 c f [when the base trains: + c f for down's input
  and c h per q/k/v/gate/up input, once per norm when s = c] + per adapted linear (c in + 1 B in with dropout
  + c r [+ 2 c out for DoRA]), with c the compute bytes (2 under autocast), s the residual stream's (4 when
  the embeddings are fp32), q and kv the query and key/value widths, f the MLP width. SDPA given a mask
  (several items in a packed or padded micro-batch) also keeps repeated key/value heads (kv → q) and the mask,
  c x row tokens^2 per layer. With gradient checkpointing: s h per token and layer plus one layer's full set.
  Outside the layers: the embedding output, the final norm, and logits only at answer positions (medtune's
  head skips the rest: a few tokens per item).
- overhead: 1 GiB (CUDA context, cuBLAS workspaces: outside ``torch.cuda.max_memory_allocated``) + 5 % for the
  caching allocator's fragmentation. The peak is the largest of the forward/backward (activations and working
  copies) and the optimizer step (gradients and step buffers), on top of what stays (weights, moments).

These are estimates made before loading, aimed at 25 % of a measured peak. The per-layer activation terms equal
what autograd keeps on CPU to 1 % (the tests measure it for each method); the totals are to be put beside
``torch.cuda.max_memory_allocated()`` (:attr:`MemoryPlan.allocated`) by the GPU check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from medtune.training.memory_plan import GIB, MemoryPlan, count_text
from medtune.training.model_shape import LinearGroup, ModelShape

if TYPE_CHECKING:

    from medtune.training.config import TrainSettings

OVERHEAD_FIXED = GIB  # CUDA context + cuBLAS/cuDNN workspaces (≈0.5-1 GiB on recent GPUs), unseen by the allocator
OVERHEAD_SHARE = 0.05  # reserved but unused blocks of PyTorch's caching allocator
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit code + 8-bit absmax per 64 weights + fp32 scale per 256 blocks
DROPOUT_MASK_BYTES = 1  # CUDA's fused dropout keeps a bool mask
FSDP_GATHERED_LAYERS = 2  # the layer computed and the one prefetched
LABEL_TOKENS = {"letter": 2}  # answer tokens per item the head runs on (letter + EOS); see _label_tokens
ADAMW_STATE, ADAMW_8BIT_STATE = 8, 2


@dataclass(frozen=True)
class MemoryMethod:
    """What the plan needs of a method: which weights train and how the base is held."""

    kind: str  # full | galore | lora | qlora
    dora: bool = False
    targets: tuple[str, ...] | None = None  # leaf names LoRA adapts (None: every linear but the head)
    label: str = ""


def memory_method(config: TrainSettings) -> MemoryMethod:
    """How ``config``'s method holds the model, for the formulas (and for the fit check's suggestions)."""
    name = config.method
    if name == "knowtuning":
        inner = config.knowtuning.inner_method
        if inner == "full":
            return MemoryMethod("full", label="knowtuning (full)")
        targets = tuple(config.knowtuning.lora_targets) if config.knowtuning.lora_targets else None
        return MemoryMethod("lora", targets=targets, label="knowtuning (lora)")
    if name in ("full", "galore", "lora", "qlora"):
        return MemoryMethod(name, label=name)
    if name == "dora":
        return MemoryMethod("lora", dora=True, label=name)
    from medtune.training.methods import get_method

    spec = get_method(name)
    if name == "knowtuning-lora":
        targets = tuple(config.knowtuning.lora_targets) if config.knowtuning.lora_targets else None
        return MemoryMethod("lora", targets=targets, label=name)
    if spec.base_quantization == "4bit":
        return MemoryMethod("qlora", label=name)
    return MemoryMethod("lora" if spec.is_adapter else "full", label=name)


def planned_precision(config: TrainSettings) -> str:
    """The precision to plan for: the run's own on a GPU machine; on a CPU machine the GPU run being planned
    (``auto`` → bf16), since a CPU run has no GPU memory to plan."""
    from medtune.hardware import on_gpu

    if on_gpu():
        return config.resolved_dtype()
    return "bf16" if config.dtype == "auto" else config.dtype


def _adapters(shape: ModelShape, m: MemoryMethod) -> list[LinearGroup]:
    if m.targets is None:
        return list(shape.linears)
    return [g for g in shape.linears if g.name in set(m.targets)]


def _label_tokens(config: TrainSettings, items: int, tokens: int) -> int:
    """Answer tokens the head runs on: the letter and EOS; an option's text ~32 tokens; with the explanation up
    to half the item."""
    if config.target == "letter":
        per = LABEL_TOKENS["letter"]
    elif config.target == "option":
        per = min(32, config.max_length // 2)
    else:
        per = config.max_length // 2
    return min(tokens, items * per)


@dataclass(frozen=True)
class _Pass:
    """One forward/backward's inputs: rows of tokens, and what the activations are made of."""

    rows: tuple[int, ...]  # tokens per row of the micro-batch
    compute: int  # bytes of the matmul inputs/outputs (2 under autocast)
    residual: int  # bytes of the residual stream (4 when the embeddings are fp32)
    linear_out: int  # bytes of a frozen base linear's output (a 4-bit linear returns its input's dtype)
    base_trains: bool
    adapters: tuple[tuple[LinearGroup, int], ...]  # (adapted linears, rank)
    dropout: bool
    dora: bool
    attn: str
    checkpointing: bool
    label_tokens: int
    items: int  # items per micro-batch

    @property
    def tokens(self) -> int:
        return sum(self.rows)


def layer_bytes_per_token(shape: ModelShape, p: _Pass) -> int:
    """Bytes one decoder layer keeps for the backward, per token (the module docstring's formula)."""
    h, q, kv, f = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    c, s = p.compute, p.residual
    masked = _masked(p)
    norms = 2 * (4 * h + (s * h if p.base_trains else 0))
    kv_kept = q if masked and p.attn != "flash" else kv  # transformers repeats k/v heads when SDPA gets a mask
    attention = c * (2 * q + 2 * kv_kept) + 4 * shape.n_heads  # q, k, v, output + the softmax's log-sum-exp
    mlp = (3 if shape.gated_mlp else 2) * p.linear_out * f
    if p.base_trains:
        separate = s != c  # autocast casts the fp32 norm output once per linear that reads it
        mlp += c * f + c * h * ((3 if separate else 1) + ((2 if shape.gated_mlp else 1) if separate else 1))
    adapters = 0.0
    shared = c == 4 and not p.dropout  # fp32 without dropout: an adapter keeps the very tensor its layer reads
    for g, r in p.adapters:
        per_layer = g.count / shape.n_layers
        copy = 0 if shared and g.name in _SHARED_INPUTS else c * g.fan_in  # the adapter's own (cast) input
        mask = DROPOUT_MASK_BYTES * g.fan_in if p.dropout else 0
        dora = 2 * c * g.fan_out if p.dora else 0  # DoRA keeps the base and the adapter outputs for its scaling
        adapters += per_layer * (copy + mask + c * r + dora)
    if shared:  # each input that several adapters read, once (o_proj's is the attention output, kept already)
        names = {g.name for g, _ in p.adapters}
        adapters += c * (h * bool(names & {"q_proj", "k_proj", "v_proj"}) + h * bool(names & {"gate_proj", "up_proj"})
                         + f * ("down_proj" in names))
    return int(norms + attention + mlp + adapters)


# Llama's linears whose input is a tensor the layer has anyway (see layer_bytes_per_token)
_SHARED_INPUTS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})


def _masked(p: _Pass) -> bool:
    """Whether attention gets a mask: several items in a packed row (position ids restart) or padded rows."""
    return p.items > 1


def _attention_extra(shape: ModelShape, p: _Pass) -> int:
    """Per layer: the mask SDPA keeps (c x tokens^2 per row), or eager attention's scores."""
    if p.attn == "flash" or not _masked(p):
        return 0
    squares = sum(t * t for t in p.rows)
    if p.attn == "eager":
        return squares * (shape.n_heads * (4 + p.compute) + p.compute)
    return squares * p.compute


def activation_bytes(shape: ModelShape, p: _Pass) -> int:
    """Everything the forward keeps for the backward at its peak (module docstring)."""
    t = p.tokens
    per_layer = layer_bytes_per_token(shape, p) * t + _attention_extra(shape, p)
    if p.checkpointing:
        layers = shape.n_layers * p.residual * shape.hidden * t + per_layer  # inputs + one layer recomputed
    else:
        layers = shape.n_layers * per_layer
    h = shape.hidden
    outside = (p.residual * h + 8) * t  # the embedding output and the token ids
    outside += (4 * h + (p.residual * h if p.base_trains else 0)) * t  # the final norm
    outside += (p.compute + 8) * shape.vocab * p.label_tokens  # head output, its fp32 copy, log-softmax
    if _masked(p) and p.attn != "flash":
        outside += sum(r * r for r in p.rows)  # transformers' boolean mask, shared by the layers
    return int(layers + outside)


def _optimizer_state(config: TrainSettings, m: MemoryMethod) -> tuple[float, bool]:
    """(bytes of state per trained parameter, whether the step allocates a full-size fp32 buffer)."""
    from medtune.training.methods import get_method

    optim = config.optim or get_method(config.method if config.method != "knowtuning" else "full").default_optim
    if m.kind == "qlora" and config.optim is None:
        optim = "paged_adamw_8bit"
    if optim in ("adamw_8bit", "paged_adamw_8bit"):
        return ADAMW_8BIT_STATE, False
    return ADAMW_STATE, True  # torch's foreach AdamW: a copy of the second moment's root in the step


def _galore_state(shape: ModelShape, config: TrainSettings) -> tuple[int, int]:
    """(optimizer bytes, step buffer bytes) of GaLore: projected moments and projectors for the target matrices,
    full moments for everything else; the step's SVD and back-projection of the largest matrix."""
    moment = 1 if config.galore.optim == "galore_adamw_8bit" else 4
    state = 0
    projected = 0
    for g in shape.linears:
        r = min(config.galore.rank, g.fan_in, g.fan_out)
        big, small = max(g.fan_in, g.fan_out), min(g.fan_in, g.fan_out)
        # Adafactor: a factored second moment of the projected gradient; AdamW: two moments of it
        per = 4 * (big + r) if config.galore.optim == "galore_adafactor" else 2 * moment * r * big
        state += g.count * (per + 4 * r * small)
        projected += g.count * g.fan_in * g.fan_out
    rest = shape.n_params - projected
    state += rest * (8 if config.galore.optim == "galore_adamw" else 2 if config.galore.optim.endswith("8bit") else 4)
    return state, 3 * 4 * shape.largest_linear


def _stage_plan(config: TrainSettings, shape: ModelShape, m: MemoryMethod, *, world_size: int, precision: str,
                rows: tuple[int, ...], items: int, full_logits: bool = False, reference: bool = False,
                optimizer: tuple[float, bool] | None = None, shard: bool | None = None,
                attn: str | None = None) -> MemoryPlan:
    """The plan of one pass of the training loop (or of a stage run like it)."""
    c = 4 if precision == "fp32" else 2
    mixed = precision != "fp32"
    n = shape.n_params
    sharded = world_size > 1 and (shard if shard is not None else (
        config.distributed == "fsdp" or (config.distributed == "auto" and m.kind in ("full", "galore"))))
    w = world_size if sharded else 1
    notes: dict[str, str] = {}
    adapters = [(g, config.lora.r) for g in _adapters(shape, m)] if m.kind in ("lora", "qlora") else []
    n_adapter = sum(g.count * r * (g.fan_in + g.fan_out) + (g.count * g.fan_out if m.dora else 0)
                    for g, r in adapters)
    state, foreach = optimizer or _optimizer_state(config, m)
    # FSDP2 gathers the root (embeddings, head, final norm) for the whole pass and two layers at a time
    gathered = shape.n_params - shape.n_layers * shape.layer_params + FSDP_GATHERED_LAYERS * shape.layer_params
    weights = master = working = 0
    if m.kind in ("full", "galore"):
        trainable = n
        if mixed:
            master = 4 * n // w
            notes["master"] = "fp32 master weights" + (f", 1/{w} each (FSDP)" if sharded else "")
            if sharded:
                # FSDP2's mixed-precision policy gathers the root and a layer at a time in half precision: autocast
                # then makes no copies, and nothing unsharded outlives its layer's pass
                working = c * gathered
                notes["weights"] = f"{precision} gathered root and layers (FSDP2 mixed precision)"
            else:
                # autograd keeps autocast's half-precision copy of every matmul weight until that layer's backward
                working = c * (shape.linear_params + (shape.head_params or shape.embedding_params))
                notes["weights"] = f"{precision} copies of the matmul weights, kept from forward to backward"
        else:
            weights = 4 * n // w + (4 * gathered if sharded else 0)
            notes["weights"] = "fp32" + (f", 1/{w} each + the gathered layers (FSDP)" if sharded else "")
        # the fp32 embeddings make the residual stream fp32 under autocast (bf16 when FSDP gathers them in bf16)
        residual = c if (mixed and sharded) else 4
        linear_out = c
    else:
        trainable = n_adapter
        frozen_bytes = c
        if m.kind == "qlora":
            lin = shape.linear_params
            base = NF4_BYTES * lin + 4 * (n - lin) + c * shape.largest_linear  # + one dequantised weight at a time
            notes["weights"] = f"NF4 linears, other weights fp32, adapters fp32 ({count_text(n_adapter)})"
            residual, linear_out = 4, 4  # a 4-bit linear returns its (fp32) input's dtype
        else:
            base = frozen_bytes * n
            notes["weights"] = f"frozen base in {precision}, adapters fp32 ({count_text(n_adapter)})"
            residual, linear_out = c, c
        if sharded:
            base = base / w + frozen_bytes * gathered
        weights = int(base + 4 * n_adapter / w)
    if reference:
        weights += 4 * n  # a frozen fp32 copy of the model as the DPO reference
        notes["weights"] = notes.get("weights", "") + "; + an fp32 reference copy"
    gradients = 4 * trainable // w
    if sharded:
        gradients += 4 * shape.layer_params  # a layer's unsharded gradients before the reduce-scatter
    elif world_size > 1:
        gradients *= 2  # DDP's all-reduce buckets
        notes["gradients"] = "fp32, + DDP's all-reduce buffers"
    scratch = 0
    if m.kind == "galore":
        opt_bytes, scratch = _galore_state(shape, config)
        opt_bytes //= w
        notes["optimizer"] = f"{config.galore.optim}, rank {config.galore.rank} moments + projectors"
    else:
        opt_bytes = int(state * trainable) // w
        scratch = 4 * trainable // w if foreach else 0
        notes["optimizer"] = "AdamW, 2 fp32 moments" if state == ADAMW_STATE else "8-bit AdamW"
    p = _Pass(rows=rows, compute=c, residual=residual, linear_out=linear_out,
              base_trains=m.kind in ("full", "galore"), adapters=tuple(adapters), dropout=config.lora.dropout > 0,
              dora=m.dora, attn=attn or _attn(config), checkpointing=config.gradient_checkpointing,
              label_tokens=sum(rows) if full_logits else _label_tokens(config, items, sum(rows)), items=items)
    activations = activation_bytes(shape, p)
    if m.dora:  # DoRA's weight norm, one linear at a time: an identity through the adapter, W and W + BA in fp32
        activations += max((6 * g.fan_in**2 + 12 * g.fan_in * g.fan_out for g, _ in adapters), default=0)
    notes["activations"] = (f"{len(rows)} row(s), {sum(rows)} tokens" + (", checkpointed" if p.checkpointing else "")
                            + ("" if p.attn == "flash" or not _masked(p) else f", {p.attn} mask"))
    static = weights + master + opt_bytes
    # the backward runs inside autocast: the working copies stay until it ends, beside the finished gradients
    during = static + working + max(activations + (gradients if config.grad_accum > 1 else 0), gradients)
    step = static + gradients + scratch
    allocated = max(during, step)
    overhead = int(OVERHEAD_FIXED + OVERHEAD_SHARE * allocated)
    notes["overhead"] = "CUDA context 1 GiB + 5 % allocator fragmentation"
    if scratch:
        notes["scratch"] = "optimizer step buffers (after the backward)"
    return MemoryPlan(model=config.model, method=m.label or config.method, precision=precision,
                      world_size=world_size, sharded=sharded, tokens=sum(rows), weights=int(weights + working),
                      master=int(master), gradients=int(gradients), optimizer=int(opt_bytes),
                      activations=int(activations), scratch=int(scratch), overhead=overhead,
                      total=int(allocated + overhead), peak="forward/backward" if during >= step else "optimizer step",
                      n_params=n, trainable=trainable, notes=notes, memory_check=config.memory_check)


def _attn(config: TrainSettings) -> str:
    return "flash" if config.attn_implementation.startswith("flash") else config.attn_implementation


def _rows(config: TrainSettings, rows_per_item: int = 1) -> tuple[int, ...]:
    """Tokens per row of the largest micro-batch: one packed row, or ``batch_size`` padded rows."""
    if config.packing and rows_per_item == 1:
        return (config.batch_size * config.max_length,)
    return (config.max_length,) * (config.batch_size * rows_per_item)


def estimate_memory(config: TrainSettings, shape: ModelShape, *, world_size: int, precision: str) -> MemoryPlan:
    """The plan of ``config`` on ``shape`` per GPU of ``world_size`` at ``precision``, without a verdict: for a method
    with stages of its own (``knowtuning``) the larger of its stages."""
    m = memory_method(config)
    plan = _stage_plan(config, shape, m, world_size=world_size, precision=precision, rows=_rows(config),
                       items=config.batch_size)
    if config.method == "knowtuning":
        # The KC stage is TRL's DPOTrainer as medtune configures it: fp32 weights and compute, chosen and rejected
        # answers as padded rows, SDPA, logits over every position, fused AdamW; with full training a reference copy.
        kc = _stage_plan(config, shape, m, world_size=world_size, precision="fp32", rows=_rows(config, 2),
                         items=2 * config.batch_size, full_logits=True, reference=m.kind == "full",
                         optimizer=(ADAMW_STATE, False), shard=False, attn="sdpa")
        plan.stage, kc.stage = "the KA stage", "the KC (DPO) stage"
        plan = kc if kc.total > plan.total else plan
    elif config.method == "dpo":
        # TRL's DPOTrainer as the dpo method runs it: a step's whole global batch in one micro-batch, chosen and
        # rejected answers as padded rows, logits over every position; the reference is the adapter-disabled policy.
        pairs = config.global_batch
        plan = _stage_plan(config, shape, m, world_size=world_size, precision=precision,
                           rows=(config.max_length,) * (2 * pairs), items=2 * pairs, full_logits=True,
                           optimizer=(ADAMW_STATE, False), shard=False, attn="sdpa")
    return plan
