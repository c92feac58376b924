"""The job schema: every knob of a ganscope training job, with the DCGAN paper's defaults.

This module imports no torch: the server validates jobs with it (docs/design.md,
"Parts and data flow"). Field names are the REST/YAML contract; do not rename.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

IMAGE_DATASETS = ("shapes", "mnist", "fashion_mnist", "cifar10", "celeba", "folder")
TOY_2D_DATASETS = ("ring8", "grid25")
TOY_1D_DATASETS = ("gauss1d", "bimodal1d", "trimodal1d", "poisson1d")
DATASETS = IMAGE_DATASETS + TOY_2D_DATASETS + TOY_1D_DATASETS
# torchvision sets and the user's folder live on disk under data_root; the rest are generated.
DISK_DATASETS = ("mnist", "fashion_mnist", "cifar10", "celeba", "folder")
IMAGE_SIZES = (16, 32, 64, 128)
# Channels each image dataset yields.
DATASET_CHANNELS = {"shapes": 3, "mnist": 1, "fashion_mnist": 1, "cifar10": 3, "celeba": 3, "folder": 3}

DatasetName = Literal[
    "shapes", "mnist", "fashion_mnist", "cifar10", "celeba", "folder",
    "ring8", "grid25", "gauss1d", "bimodal1d", "trimodal1d", "poisson1d",
]

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
MAX_GPUS = 64  # the most devices a worker advertises in one claim (the server's cap on the list)
MAX_NOTIFY = 10
NOTIFY_FORMATS = ("json", "slack", "discord")


def parse_notify_target(target: str) -> tuple[str | None, str]:
    """`[json+|slack+|discord+]http(s)://host/...` -> (format or None for "decide by host", url).

    Raises ValueError naming what is wrong. Shared by the job schema (`notify`) and the server's
    own webhook settings, so both accept exactly the same forms.
    """
    fmt: str | None = None
    head, plus, rest = target.partition("+")
    if plus and head in NOTIFY_FORMATS:
        fmt, target = head, rest
    if len(target) > 2000:
        raise ValueError("a webhook URL may be at most 2000 characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in target):
        raise ValueError(f"webhook URL {target[:80]!r} contains whitespace or control characters")
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL {target[:80]!r} must be http:// or https:// with a host, optionally "
                         f"prefixed by one of {', '.join(f + '+' for f in NOTIFY_FORMATS)}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError(f"webhook URL {target[:80]!r} has an invalid port") from None
    return fmt, target

LossName = Literal["nonsaturating", "minimax", "hinge", "wgan_gp"]
# Losses on D's probability (binary cross-entropy on its logit): the only ones where pred/* and
# label smoothing mean anything.
BCE_LOSSES = ("nonsaturating", "minimax")
AUGMENT_OPS = ("color", "translation", "cutout")
STABILISER_KNOBS = ("spectral_norm", "r1_gamma", "ema_g", "diffaugment")


@dataclass(frozen=True)
class Limits:
    """Operator-set caps on what one job may ask for (server settings fill these)."""

    max_batch_size: int = 1024
    max_image_size: int = 128
    max_steps: int = 10_000_000


class JobConfig(BaseModel):
    """One training job. Unknown fields are rejected so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- what and where -----------------------------------------------------
    name: str = Field("", max_length=200, description="Free text shown everywhere (always escaped).")
    dataset: DatasetName = Field("shapes", description="Training data; `shapes` is procedural and needs no download.")
    data_root: str | None = Field(
        None, max_length=1000,
        description="Folder (inside the server's data root) holding a torchvision set or an image folder.",
    )

    # --- networks (DCGAN, Radford et al. 2015) -------------------------------
    image_size: int = Field(64, description="Side in pixels: 16, 32, 64 or 128. Network depth follows it.")
    nz: int = Field(100, ge=1, le=1024, description="Latent size.")
    ngf: int = Field(64, ge=1, le=1024, description="Generator width (feature maps of its last hidden layer).")
    ndf: int = Field(64, ge=1, le=1024, description="Discriminator width (feature maps of its first layer).")
    d_downsample: Literal["strided", "avgpool"] = Field(
        "strided", description="Strided convolutions (DCGAN) or stride-1 conv + average pooling in D.")
    batch_norm: bool = Field(True, description="Batch norm in both nets (not on G's output nor D's input layer).")
    bn_momentum: float = Field(0.1, gt=0, le=1, description="PyTorch convention: 0.1 equals TF's decay 0.9.")
    g_act: Literal["relu", "leaky_relu"] = Field("relu", description="Hidden activation in G (tanh output).")
    d_act: Literal["relu", "leaky_relu"] = Field("leaky_relu", description="Hidden activation in D (sigmoid output).")
    leaky_slope: float = Field(0.2, ge=0, lt=1, description="Negative slope of LeakyReLU.")
    init: Literal["normal", "xavier", "default"] = Field(
        "normal", description="Weight init: N(0, init_std) as in DCGAN, xavier, or PyTorch's default.")
    init_std: float = Field(0.02, gt=0, le=10, description="Std of the normal init (0.02 in DCGAN).")
    minibatch_disc: bool = Field(False, description="Minibatch discrimination layer in D (Salimans et al. 2016).")
    toy_hidden: int = Field(128, ge=2, le=4096, description="Hidden width of the MLP G and D on toy datasets.")
    toy_layers: int = Field(3, ge=1, le=8, description="Hidden layers of the MLP G and D on toy datasets.")

    # --- optimisation --------------------------------------------------------
    lr_d: float = Field(2e-4, gt=0, le=1, description="Adam learning rate of D.")
    lr_g: float = Field(2e-4, gt=0, le=1, description="Adam learning rate of G.")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 (0.5 in DCGAN).")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2.")
    batch_size: int = Field(128, ge=1, description="Images (or points) per batch.")
    d_steps: int = Field(1, ge=1, le=100, description="D updates per G update.")
    g_steps: int = Field(1, ge=1, le=100, description="G updates per D update.")
    label_smoothing: float = Field(
        1.0, description="One-sided target for real samples, in (0, 1]: 1.0 is off, 0.9 is the classic trick.")
    fm_weight: float = Field(0.0, ge=0, le=1000, description="Feature-matching weight in G's loss (0 is off).")
    fm_warmup_steps: int = Field(
        0, ge=0, description="Steps over which the feature-matching weight ramps from 0, adversarial term first.")
    loss: LossName = Field(
        "nonsaturating",
        description="GAN objective. nonsaturating: G minimises -log D(G(z)); minimax: log(1 - D(G(z))) (both "
                    "BCE on D's logit, Goodfellow et al. 2014); hinge: D minimises relu(1 - D(x)) + "
                    "relu(1 + D(G(z))), G -D(G(z)) (Lim & Ye 2017, Miyato et al. 2018); wgan_gp: a critic "
                    "with gradient penalty (Gulrajani et al. 2017), D's batch norm becomes layer norm.")
    gp_weight: float = Field(
        10.0, gt=0, le=1000, description="WGAN-GP penalty weight lambda (10 in Gulrajani et al. 2017); "
                                          "used with loss wgan_gp only.")
    steps: int = Field(2000, ge=1, description="Optimisation steps (one step = d_steps D updates + g_steps G updates).")
    epochs: int | None = Field(None, ge=1, description="If set, overrides steps: passes over a finite dataset.")

    # --- stabilisers (off by default: the DCGAN recipe is trained unchanged) ---
    spectral_norm: Literal["none", "d", "both"] = Field(
        "none", description="Spectral normalisation of every conv/linear weight in D, or in D and G "
                            "(Miyato et al. 2018; Zhang et al. 2019 for G).")
    r1_gamma: float = Field(
        0.0, ge=0, le=10_000, description="R1 penalty gamma/2 * E||grad_x D(x)||^2 on real data "
                                          "(Mescheder et al. 2018); 0 is off.")
    r1_every: int = Field(
        16, ge=1, le=10_000, description="Lazy R1: computed every this many D updates and scaled by it "
                                         "(Karras et al. 2020, StyleGAN2).")
    ema_g: float = Field(
        0.0, ge=0, lt=1, description="Decay of an exponential moving average of G's weights, which then draws "
                                     "every sample (Yazici et al. 2019; e.g. 0.999); 0 is off.")
    diffaugment: str = Field(
        "", max_length=100,
        description="DiffAugment policy for image sets (Zhao et al. 2020): comma-separated subset of color, "
                    "translation, cutout, applied to real and fake images in every D and G step; empty is off.")

    # --- reporting -----------------------------------------------------------
    sample_every: int = Field(100, ge=1, description="Steps between fixed-z sample grids.")
    checkpoint_every: int = Field(500, ge=1, description="Steps between checkpoints (one is always written at the end).")
    toy_every: int = Field(100, ge=1, description="Steps between density/scatter snapshots on toy datasets.")
    probe_every: int = Field(1, ge=1, description="Steps between per-layer gradient/weight/update probes.")
    eval_every: int = Field(
        250, ge=0, le=10_000_000,
        description="Image sets: steps between quality evaluations (quality/kid, fid, precision, recall, coverage; "
                    "on shapes also recognisable and modes); 0 is off. Toy sets use toy_every.")
    eval_samples: int = Field(
        256, ge=16, le=50_000,
        description="Generated and real images per quality evaluation (KID is unbiased at a few hundred; FID is "
                    "biased this small and judged only as a trend).")
    flush_every: int = Field(50, ge=1, description="Steps between metric hand-overs from device to host.")
    flush_seconds: float = Field(2.0, gt=0, le=3600, description="Longest wait between metric hand-overs.")

    # --- reproducibility and hardware ---------------------------------------
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seeds data, init, z and the fixed sample z.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    amp: bool = Field(False, description="bf16 autocast on CUDA (ignored on CPU).")
    channels_last: bool = Field(False, description="channels_last memory format on CUDA.")
    gpus: int = Field(
        0, ge=0, le=MAX_GPUS,
        description="GPUs the job needs: only a worker advertising at least this many claims it. 0 = any "
                    "worker, CPU included. N >= 2 trains on N GPUs at once, one process per GPU under torchrun "
                    "(DistributedDataParallel; effective batch batch_size x N).")

    # --- failure policy and queue -------------------------------------------
    on_failure: Literal["warn", "stop", "heal"] = Field(
        "warn", description="What a failing signature does: report only, stop the run, or heal it (roll back to "
                            "the last checkpoint before the symptom's onset, apply the remedy, continue).")
    max_heals: int = Field(
        2, ge=0, le=20, description="With on_failure heal: interventions before a further failing signature "
                                    "stops the run as on_failure stop does.")
    remedy_of: dict[str, Any] | None = Field(
        None, json_schema_extra={"group": "policy"}, description="Set by a remedy (relaunch or heal): {signature, level} of the rung applied, so a "
                          "repeat of that signature escalates the remedy ladder. Leave empty.")
    detectors: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Per-signature threshold overrides: {signature_id: {threshold: value}}.")
    priority: int = Field(0, ge=-100, le=100, description="Queue priority: higher runs first.")
    max_attempts: int = Field(3, ge=1, le=20, description="Tries before a job whose worker keeps dying is failed.")
    notify: list[str] = Field(
        default_factory=list, max_length=MAX_NOTIFY,
        description="Webhook URLs told when this run opens or escalates an alert, is stopped, fails or "
                    "succeeds (besides the server's own). Slack and Discord URLs get a text message, others "
                    "JSON; prefix slack+, discord+ or json+ to choose. Never signed with the server's secret.")

    @field_validator("image_size")
    @classmethod
    def _image_size_supported(cls, v: int) -> int:
        if v not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {', '.join(map(str, IMAGE_SIZES))} (a power of two), got {v}")
        return v

    @field_validator("label_smoothing")
    @classmethod
    def _smoothing_range(cls, v: float) -> float:
        if not (0 < v <= 1):
            raise ValueError(f"label_smoothing must be in (0, 1] (1.0 is off, 0.9 the classic value), got {v}")
        return v

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        if not _DEVICE_RE.match(v):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    @field_validator("notify")
    @classmethod
    def _notify_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            parse_notify_target(url)
        if len(set(v)) != len(v):
            raise ValueError("notify lists the same URL twice")
        return v

    @field_validator("remedy_of")
    @classmethod
    def _remedy_of_form(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        # The launch form sends {} for an empty object knob: that is "no remedy".
        if not v:
            return None
        sig, level = v.get("signature"), v.get("level")
        if set(v) - {"signature", "level"} or not isinstance(sig, str) or not (0 < len(sig) <= 64) \
                or isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 100:
            raise ValueError('remedy_of must be {"signature": "<signature id>", "level": 0-100} or empty')
        return {"signature": sig, "level": level}

    @field_validator("data_root")
    @classmethod
    def _data_root_relative(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = re.split(r"[\\/]+", v)
        if ".." in parts or "\x00" in v:
            raise ValueError("data_root may not contain '..' or NUL: it is resolved inside the server's data root")
        return v

    @field_validator("diffaugment")
    @classmethod
    def _augment_policy(cls, v: str) -> str:
        """Normalised to "op,op" in the canonical order, so equal policies compare equal."""
        ops = [op.strip() for op in v.split(",") if op.strip()]
        unknown = [op for op in ops if op not in AUGMENT_OPS]
        if unknown:
            raise ValueError(f"diffaugment ops must be among {', '.join(AUGMENT_OPS)} (comma-separated; "
                             f"empty is off), got {', '.join(map(repr, unknown))}")
        if len(set(ops)) != len(ops):
            raise ValueError(f"diffaugment names an op twice: {v!r}")
        return ",".join(op for op in AUGMENT_OPS if op in ops)

    @model_validator(mode="after")
    def _dataset_needs(self) -> "JobConfig":
        if self.dataset == "folder" and not self.data_root:
            raise ValueError("dataset 'folder' needs data_root: the image folder's path inside the data root")
        if self.epochs is not None and self.dataset not in DISK_DATASETS and self.dataset != "shapes":
            raise ValueError(f"epochs needs a finite dataset; {self.dataset} is sampled endlessly: use steps")
        return self

    @model_validator(mode="after")
    def _stabilisers_fit(self) -> "JobConfig":
        # Combinations that would silently do nothing or break the method are refused, not ignored.
        if self.diffaugment and self.is_toy:
            raise ValueError(f"diffaugment augments images (colour, translation, cutout); {self.dataset} is a toy "
                             "set of points: leave diffaugment empty")
        if self.label_smoothing != 1.0 and self.loss not in BCE_LOSSES:
            raise ValueError(f"label_smoothing softens the BCE target and has no meaning under loss {self.loss}: "
                             "set label_smoothing to 1.0 (off)")
        if self.minibatch_disc and self.loss == "wgan_gp":
            raise ValueError("minibatch_disc mixes the samples of a batch inside D, which breaks WGAN-GP's "
                             "per-sample gradient penalty: turn minibatch_disc off or use loss hinge")
        return self

    # --- derived facts (no torch) -------------------------------------------
    @property
    def is_toy(self) -> bool:
        return self.dataset in TOY_1D_DATASETS or self.dataset in TOY_2D_DATASETS

    @property
    def data_dim(self) -> int:
        """1 or 2 for toy sets, 0 for image sets."""
        if self.dataset in TOY_1D_DATASETS:
            return 1
        if self.dataset in TOY_2D_DATASETS:
            return 2
        return 0

    @property
    def channels(self) -> int:
        return DATASET_CHANNELS.get(self.dataset, 0)

    @property
    def d_norm(self) -> Literal["batch", "layer", "none"]:
        """D's normalisation: batch norm, or layer norm under wgan_gp, whose gradient penalty is per
        sample and so cannot go through batch statistics (Gulrajani et al. 2017, section 4)."""
        if not self.batch_norm:
            return "none"
        return "layer" if self.loss == "wgan_gp" else "batch"

    @property
    def augment_ops(self) -> tuple[str, ...]:
        return tuple(op for op in self.diffaugment.split(",") if op)

    def check_limits(self, limits: Limits) -> list[dict[str, Any]]:
        """Errors (FastAPI 422 shape) for knobs beyond the operator's caps; empty when within."""
        errors: list[dict[str, Any]] = []

        def err(field: str, msg: str) -> None:
            errors.append({"loc": ["body", field], "msg": msg, "type": "value_error.limit"})

        if self.batch_size > limits.max_batch_size:
            err("batch_size", f"batch_size {self.batch_size} exceeds this server's cap of {limits.max_batch_size}")
        if not self.is_toy and self.image_size > limits.max_image_size:
            err("image_size", f"image_size {self.image_size} exceeds this server's cap of {limits.max_image_size}")
        if self.steps > limits.max_steps:
            err("steps", f"steps {self.steps} exceeds this server's cap of {limits.max_steps}")
        return errors

    def key_knobs(self) -> dict[str, Any]:
        """The handful of knobs the runs list shows."""
        keys = ["dataset", "image_size", "batch_size", "lr_d", "lr_g", "d_steps", "loss",
                "label_smoothing", "fm_weight", "init_std", "steps", "on_failure"]
        out = {k: getattr(self, k) for k in keys}
        if self.is_toy:
            out.pop("image_size")
        # Stabilisers only when on: they are what tells two otherwise alike runs apart.
        for k in STABILISER_KNOBS:
            if getattr(self, k) != JobConfig.model_fields[k].default:
                out[k] = getattr(self, k)
        return out


def knob_catalog() -> list[dict[str, Any]]:
    """Every knob with default, type, constraints and help: the launch form is built from this."""
    schema = JobConfig.model_json_schema()
    out = []
    for name, prop in schema["properties"].items():
        out.append({"name": name, "default": prop.get("default"), "help": prop.get("description", ""),
                    "schema": prop})
    return out


# --- SDK runs: the declared part ----------------------------------------------------------------------
# A user's own script has its own options; ganscope never reads them. What the detectors and the run
# summary need from such a run is what the script *declares*, validated here (the server imports this
# module, so it stays torch-free). Nothing is filled from JobConfig's defaults: a field left out is unknown.

# JobConfig knobs a script may declare under the same names (the detectors and the runs list read them).
# A name missing from JobConfig (a knob another version adds or drops) is skipped.
DECLARABLE_KNOBS = ("lr_d", "lr_g", "beta1", "beta2", "batch_size", "d_steps", "g_steps", "nz", "init", "init_std",
                    "fm_weight", "gp_weight", "r1_gamma", "r1_every", "ema_g", "spectral_norm", "diffaugment")
MAX_LAYER_NAMES = 10_000  # per net; a layer per metric name, so the ingest cap on names bounds it anyway


class _DeclaredFields(BaseModel):
    """What an SDK run declares about itself; every field optional, unknown names refused (a typo is named)."""

    model_config = ConfigDict(extra="forbid")

    loss: Literal["nonsaturating", "minimax", "hinge", "wgan", "wgan_gp"] | None = Field(
        None, description="The adversarial loss: nonsaturating or minimax (BCE family: D outputs a probability "
                          "through a sigmoid), hinge, wgan or wgan_gp (D is a critic: read score/*, not pred/*).")
    loss_d_reduction: Literal["sum", "mean"] | None = Field(
        None, description="Whether loss/d is the sum (ganscope's trainer, pytorch/examples' DCGAN) or the mean "
                          "(many PyTorch-GAN scripts: (real + fake) / 2) of loss/d_real and loss/d_fake.")
    total_steps: int | None = Field(None, ge=1, le=2**62, description="Steps the run will take: the progress bar.")
    image_size: int | None = Field(None, ge=1, le=1 << 16, description="Side of the images in pixels (any size).")
    dataset: str | None = Field(None, min_length=1, max_length=100,
                                description="The data's name, shown in the runs list. ring8, grid25 and the 1-D "
                                            "toy names tell the detectors how many modes there are.")
    label_smoothing: float | None = Field(
        None, gt=0, le=1, description="One-sided target for real samples (1.0 off): D(x) tops out there.")
    on_failure: Literal["warn", "stop"] | None = Field(
        None, description="What a failing signature does: report only (warn, the default), or tell the script "
                          "to stop (run.should_stop() turns True).")
    detectors: dict[str, dict[str, float]] | None = Field(
        None, description="Per-signature threshold overrides: {signature_id: {threshold: value}}.")
    layers: dict[Literal["g", "d"], list[str]] | None = Field(
        None, description="Each net's weight layers in registration order, as named in grad|weight|update/"
                          "<net>/<layer>; the first is the layer the classic plots show. run.watch() sends it.")

    notify: list[str] | None = Field(
        None, max_length=MAX_NOTIFY, description="Webhook URLs told about this run (as a job's `notify`).")

    @field_validator("notify")
    @classmethod
    def _notify_targets(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else JobConfig._notify_urls(v)  # the same checks as a job's `notify`

    @field_validator("layers")
    @classmethod
    def _layer_names(cls, v: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for net, names in (v or {}).items():
            if len(names) > MAX_LAYER_NAMES:
                raise ValueError(f"layers.{net}: {len(names)} names; at most {MAX_LAYER_NAMES}")
            bad = [n for n in names if not n or len(n) > 180 or any(c in n for c in "*,\x00\n")]
            if bad:
                raise ValueError(f"layers.{net}: bad layer name {bad[0]!r} (1-180 characters, no '*', ',' or "
                                 "control characters)")
        return v


def _declarable(name: str) -> tuple[Any, Any]:
    """A JobConfig knob as an optional field with the same type, bounds and help, default None."""
    from pydantic.fields import FieldInfo

    field = JobConfig.model_fields[name]
    return field.annotation | None, FieldInfo.merge_field_infos(field, default=None)


# Typed like the JobConfig knobs it borrows, so a bound or a choice changes in one place only.
DeclaredConfig: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "DeclaredConfig", __base__=_DeclaredFields, __doc__=_DeclaredFields.__doc__,
    **{k: _declarable(k) for k in DECLARABLE_KNOBS if k in JobConfig.model_fields})

# Every field an SDK run may declare.
DECLARED_FIELDS: tuple[str, ...] = tuple(DeclaredConfig.model_fields)
# The runs list's key config, for SDK runs: the declared ones among these.
SDK_KEY_KNOBS = ("dataset", "image_size", "batch_size", "lr_d", "lr_g", "d_steps", "loss", "loss_d_reduction",
                 "label_smoothing", "total_steps", "on_failure")


def validate_declared(data: dict[str, Any]) -> dict[str, Any]:
    """The declared part as stored (only what was given, None dropped); pydantic's ValidationError if bad."""
    return DeclaredConfig.model_validate(data).model_dump(mode="json", exclude_none=True)


def declared_from_config(config: dict[str, Any], declared: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a user's free-form config for declared names, for clients that send everything in `config`.

    A key of `config` that names a declared field and holds a valid value for it is declared too, unless
    `declared` already sets it (the explicit part wins); `steps` stands for total_steps (the JobConfig name
    older clients used). Other keys are the user's own and never refused. Returns (the merged declared part,
    {key: why it was not read} for declared names whose value did not fit, so the client can say so).
    """
    out = dict(declared)
    skipped: dict[str, str] = {}
    aliases = {"steps": "total_steps"}
    for key, value in config.items():
        field = aliases.get(key, key)
        if field not in DECLARED_FIELDS or field in out:
            continue
        try:
            out[field] = DeclaredConfig.model_validate({field: value}).model_dump(mode="json")[field]
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            errs = getattr(exc, "errors", None)
            msg = errs()[0]["msg"] if callable(errs) else str(exc)
            skipped[key] = f"config[{key!r}] = {value!r} is not read as the declared {field}: {msg}"
    return {k: v for k, v in out.items() if v is not None}, skipped
