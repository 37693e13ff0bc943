"""The job spec: what a client sends to start a training job. Every choice is validated here, up front,
with a message that says what to change."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.graphs import static_refusal
from models.optimizers import FULL_BATCH
from service.registry.schemas import PromoteIn

Rate = Annotated[float, Field(ge=0.0, lt=1.0)]


def _numeric(annotation: object) -> bool:
    """int or float, alone or inside Optional, a list or a tuple."""
    return annotation in (int, float) or any(_numeric(a) for a in getattr(annotation, "__args__", ()))


def _boolean(annotation: object) -> bool:
    """bool, alone or as an Optional."""
    return annotation is bool or (type(None) in getattr(annotation, "__args__", ()) and bool in annotation.__args__)


class Strict(BaseModel):
    # Python's JSON reader takes NaN and Infinity; a spec holds finite numbers only.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: object) -> object:
        """true and false are not numbers here, nor 0 and 1 booleans (pydantic would read either as the
        other): the server takes what the schema says."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                values = value if isinstance(value, (list, tuple)) else [value]
                if field is not None and _numeric(field.annotation) and any(isinstance(v, bool) for v in values):
                    raise ValueError(f"{name}: numbers are needed here, not true or false")
                if field is not None and _boolean(field.annotation) and value is not None and not isinstance(value, bool):
                    raise ValueError(f"{name}: true or false is needed here, not {value!r}")
        return data


# Architectures ----------------------------------------------------------------------------------------

class LogisticRegressionSpec(Strict):
    """Multiclass (softmax) logistic regression."""

    type: Literal["logistic_regression"]


class MLPSpec(Strict):
    """Fully connected network; the course's default is two hidden ReLU layers of 400 and 200."""

    type: Literal["mlp"]
    hidden_sizes: list[Annotated[int, Field(ge=1, le=8192)]] = Field([400, 200], min_length=1, max_length=16)
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    dropout: Rate | list[Rate] = Field(0.0, description="One rate for every hidden layer, or one per layer.")

    @model_validator(mode="after")
    def _one_rate_per_layer(self) -> "MLPSpec":
        if isinstance(self.dropout, list) and len(self.dropout) != len(self.hidden_sizes):
            raise ValueError(f"dropout lists {len(self.dropout)} rates for {len(self.hidden_sizes)} hidden layers; "
                             "give one rate per layer, or a single number for all")
        return self


class CNNSpec(Strict):
    """Conv-ReLU-pool blocks and a dense layer, for single-channel images (28x28 or 8x8)."""

    type: Literal["cnn"]
    channels: list[Annotated[int, Field(ge=1, le=512)]] = Field([32, 64], min_length=1, max_length=4)
    kernel_size: Literal[1, 3, 5, 7] = 3
    hidden_size: int = Field(128, ge=1, le=4096)
    dropout: Rate = 0.0


class RecurrentSpec(Strict):
    """An LSTM or GRU and a dense head; images are read one row per step."""

    type: Literal["lstm", "gru"]
    hidden_size: int = Field(64, ge=1, le=2048)
    num_layers: int = Field(1, ge=1, le=8)
    dropout: Rate = 0.0


class BaselineSpec(Strict):
    """A forecasting baseline, no training: persistence (the last value) or seasonal naive (the value one
    season ago). The job reports its errors beside the other baseline's; no model is registered."""

    type: Literal["persistence", "seasonal_naive"]


ArchitectureSpec = Annotated[Union[LogisticRegressionSpec, MLPSpec, CNNSpec, RecurrentSpec, BaselineSpec],
                             Field(discriminator="type")]
CLASSIFIERS = {"logistic_regression", "mlp", "cnn", "lstm", "gru"}
FORECASTERS = {"lstm", "gru", "persistence", "seasonal_naive"}


class ForecastSpec(Strict):
    """What to forecast and how the series is prepared; serving repeats the same preparation."""

    target: str = Field(..., min_length=1, description="The column to forecast.", examples=["solar.total"])
    inputs: list[str] = Field([], max_length=32, description="Other columns the model reads beside the target.")
    lookback: int = Field(24, ge=1, le=2048, description="Readings the model sees (day_total: the most of a "
                                                         "day's first readings it uses).")
    horizon: int = Field(1, ge=1, le=512, description="Steps ahead to forecast.")
    framing: Literal["next_steps", "day_total"] = Field(
        "next_steps", description="next_steps: the next `horizon` values on a regular grid; day_total: a day's "
                                  "final (largest) value from its first readings, the CNTK 106B lab.")
    frequency_seconds: float | None = Field(None, gt=0, description="The grid's step; default: the most "
                                                                    "common step in the data.")
    gaps: Literal["interpolate", "drop"] = Field("interpolate", description="Fill gaps of up to max_gap_steps "
                                                 "linearly in time, or leave every gap out.")
    max_gap_steps: int = Field(4, ge=0, le=100_000)
    calendar: list[Literal["time_of_day", "day_of_year"]] | None = Field(
        None, description="sin/cos calendar inputs; default none for next_steps, day_of_year for day_total.")
    season_steps: int | None = Field(None, ge=1, description="The seasonal naive baseline's season in steps; "
                                                             "default one day.")
    scale: Literal["standard", "fixed"] = Field("standard", description="standard: mean and deviation of the "
                                                "training part; fixed: divide by scale_factor.")
    scale_factor: float = Field(1.0, gt=0)
    min_readings_per_day: int = Field(8, ge=2, le=10_000, description="day_total: days with fewer are dropped.")
    interval: float = Field(0.9, gt=0.0, lt=1.0, description="Coverage of the prediction interval.")
    relative: bool = Field(True, description="next_steps: learn changes from the last reading rather than levels, "
                                             "so a trend beyond the training range does not throw the model off.")
    previous_total: bool | None = Field(None, description="day_total (default true): the day before's total is an "
                                        "input, and the model forecasts the change from it. false: the day's "
                                        "readings alone, as the CNTK 106B tutorial ran it.")

    @model_validator(mode="after")
    def _framing_fits(self) -> "ForecastSpec":
        if self.target in self.inputs:
            raise ValueError(f"inputs lists the target {self.target!r}; the model reads the target's history anyway")
        if self.framing == "day_total":
            if self.horizon != 1 or self.inputs or "time_of_day" in (self.calendar or []):
                raise ValueError("framing day_total predicts one value a day from the target alone: set horizon 1, "
                                 "leave inputs empty, and use no time_of_day (a day's calendar input is day_of_year)")
            self.calendar = ["day_of_year"] if self.calendar is None else self.calendar
            self.previous_total = True if self.previous_total is None else self.previous_total
        else:
            if self.previous_total:
                raise ValueError("previous_total is for framing day_total; a next_steps model reads the series' "
                                 "own history (lookback, season_steps)")
            self.calendar = [] if self.calendar is None else self.calendar
            self.previous_total = False
        return self


# Optimizers -------------------------------------------------------------------------------------------

class SGDSpec(Strict):
    type: Literal["sgd"]
    momentum: Rate = 0.9
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "SGDSpec":
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0; set optimizer.momentum (e.g. 0.9) or nesterov: false")
        return self


class AdagradSpec(Strict):
    type: Literal["adagrad"]
    lr_decay: float = Field(0.0, ge=0.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)


class RMSpropSpec(Strict):
    type: Literal["rmsprop"]
    alpha: Rate = 0.99
    momentum: Rate = 0.0
    centered: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)


class AdamSpec(Strict):
    type: Literal["adam", "adamw"]
    betas: tuple[Rate, Rate] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0, le=1.0)
    weight_decay: float | None = Field(None, ge=0.0, le=1.0, description="Default 0 for adam, 0.01 for adamw.")


class LBFGSSpec(Strict):
    type: Literal["lbfgs"]
    max_iter: int = Field(20, ge=1, le=1000, description="Iterations per step, each with a strong-Wolfe line search.")
    history_size: int = Field(10, ge=1, le=1000)


class NewtonSpec(Strict):
    type: Literal["newton"]
    damping: float = Field(1e-4, gt=0.0, le=1e6, description="Added to the Hessian's diagonal; grown as needed.")
    max_exact_params: int = Field(1000, ge=1, le=4000,
                                  description="Up to this many parameters, the exact Hessian; above, Newton-CG.")
    cg_iterations: int = Field(50, ge=1, le=1000)


class ConjugateGradientSpec(Strict):
    type: Literal["conjugate_gradient"]
    restart_every: int = Field(50, ge=1, le=100000)


class BFGSSpec(Strict):
    """BFGS with the dense inverse-Hessian approximation: for models of up to 8,192 parameters (logistic
    regression on 28x28 images has 7,850); above that, lbfgs."""

    type: Literal["bfgs"]
    max_iter: int = Field(20, ge=1, le=1000, description="Iterations per step, each with a strong-Wolfe line search.")


OptimizerSpec = Annotated[Union[SGDSpec, AdagradSpec, RMSpropSpec, AdamSpec, LBFGSSpec, BFGSSpec, NewtonSpec,
                                ConjugateGradientSpec], Field(discriminator="type")]

DEFAULT_LEARNING_RATE = {"sgd": 0.01, "adagrad": 0.01, "rmsprop": 0.001, "adam": 0.001, "adamw": 0.001,
                         "lbfgs": 1.0, "bfgs": 1.0, "newton": 1.0, "conjugate_gradient": 1.0}


# Training settings ------------------------------------------------------------------------------------

class StepScheduleSpec(Strict):
    type: Literal["step"]
    step_size: int = Field(10, ge=1, description="Epochs between decays.")
    gamma: float = Field(0.1, gt=0.0, le=1.0)


class CosineScheduleSpec(Strict):
    type: Literal["cosine"]
    min_lr: float = Field(0.0, ge=0.0)


class OneCycleScheduleSpec(Strict):
    """learning_rate is the peak; the rate rises, then anneals, over all the run's batches."""

    type: Literal["one_cycle"]


ScheduleSpec = Annotated[Union[StepScheduleSpec, CosineScheduleSpec, OneCycleScheduleSpec],
                         Field(discriminator="type")]


class EarlyStoppingSpec(Strict):
    monitor: Literal["val_loss", "val_accuracy", "train_loss"] = "val_loss"
    patience: int = Field(5, ge=1, le=1000)
    min_delta: float = Field(0.0, ge=0.0)


class AugmentationSpec(Strict):
    shift: float = Field(0.1, ge=0.0, le=0.5, description="Largest shift, as a fraction of width and height.")
    rotation: float = Field(10.0, ge=0.0, le=180.0, description="Largest rotation, degrees either way.")
    scale: float = Field(0.1, ge=0.0, le=0.5, description="Largest relative change of size.")


class TrainingSpec(Strict):
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int | None = Field(None, ge=1, le=65536, description="Default 64; full-batch optimizers: the "
                                                                     "whole training set.")
    learning_rate: float | None = Field(None, gt=0.0, le=10.0, description="Default per optimizer: sgd 0.01, "
                                        "adam 0.001, lbfgs/bfgs/newton/conjugate_gradient 1 (the line search's first try).")
    validation_split: float = Field(0.1, ge=0.0, le=0.5, description="Share of the data held out for validation.")
    test_split: float = Field(0.2, ge=0.0, le=0.5, description="Share of the data held out for the final test, "
                              "0.05 to 0.5; unused when the dataset has its own test set (it is tested on that), "
                              "and 0 only then.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast on CUDA; ignored on the CPU.")
    loss: Literal["cross_entropy", "mse", "mae"] = "cross_entropy"
    l1: float = Field(0.0, ge=0.0, le=10.0, description="L1 penalty on weights (not biases).")
    l2: float = Field(0.0, ge=0.0, le=10.0, description="L2 penalty, l2/2 * sum of squared weights (not biases).")
    grad_clip_norm: float | None = Field(None, gt=0.0, description="Clip the gradient's norm to this.")
    schedule: ScheduleSpec | None = None
    early_stopping: EarlyStoppingSpec | None = None
    augmentation: AugmentationSpec | None = Field(None, description="Random shifts, rotations and scaling of "
                                                  "training images; off unless given.")
    compile: Literal["auto", "graph", "none"] = Field(
        "auto", description="How a GPU runs each training step. graph: the whole step (forward, backward, "
        "optimizer) captured once as a CUDA graph and replayed, several times faster for small models; none: "
        "eager PyTorch; auto: graph where the job allows it (a minibatch optimizer other than adagrad, no "
        "schedule, no augmentation), else eager. The CPU always runs eagerly. The result's training_path says "
        "which ran and why.")


class PromoteSpec(PromoteIn, Strict):
    """Gated promotion once the model is registered: point `alias` at it only if it passes the gate
    (classifiers: `metric` at least `min`; forecasters: `metric` at most `max` and below both baselines') and
    beats the version the alias points at now. The job's result says why the alias moved or did not."""


class JobSpec(Strict):
    task: Literal["classification", "forecast"] = "classification"
    dataset: str = Field(..., min_length=1, max_length=200, description="Dataset name, name@version or id.",
                         examples=["digits"])
    forecast: ForecastSpec | None = Field(None, description="task forecast: what to forecast and how.")
    architecture: ArchitectureSpec
    optimizer: OptimizerSpec = Field(default_factory=lambda: AdamSpec(type="adam"), description="Default adam.")
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    name: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                             description="Model name to register under; default '<dataset>-<architecture>'.")
    promote: PromoteSpec | None = None

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "dataset": "digits",
        "architecture": {"type": "logistic_regression"},
        "optimizer": {"type": "sgd", "momentum": 0.9},
        "training": {"epochs": 20, "batch_size": 64, "learning_rate": 0.05},
    }]})

    @model_validator(mode="after")
    def _task_fits(self) -> "JobSpec":
        arch, t = self.architecture.type, self.training
        if self.task == "forecast":
            if self.forecast is None:
                raise ValueError("task forecast needs a forecast block: at least {\"target\": \"<column>\"}")
            if arch not in FORECASTERS:
                raise ValueError(f"architecture {arch} does not forecast; use lstm, gru, persistence or "
                                 "seasonal_naive")
            if "loss" not in t.model_fields_set:
                t.loss = "mse"
            elif t.loss == "cross_entropy":
                raise ValueError("loss cross_entropy is for classes; a forecast takes mse or mae")
            if t.augmentation is not None:
                raise ValueError("training.augmentation distorts images; remove it from a forecast job")
            if t.early_stopping and t.early_stopping.monitor == "val_accuracy":
                raise ValueError("a forecast has no accuracy: early stopping monitors val_loss or train_loss")
        else:
            if self.forecast is not None:
                raise ValueError('a forecast block needs "task": "forecast"')
            if arch not in CLASSIFIERS:
                raise ValueError(f"{arch} is a forecasting baseline; set \"task\": \"forecast\"")
        return self

    @model_validator(mode="after")
    def _gate_fits(self) -> "JobSpec":
        if self.promote is not None:
            self.promote = PromoteSpec(**self.promote.for_task(self.task).model_dump())
        return self

    @model_validator(mode="after")
    def _settings_fit_together(self) -> "JobSpec":
        opt, t = self.optimizer.type, self.training
        if 0 < t.test_split < 0.05:
            raise ValueError(f"training.test_split {t.test_split} is too small a test to trust: use 0.05 to 0.5, "
                             "or 0 with a dataset that has its own test set")
        if t.test_split == 0 and self.task == "forecast":
            raise ValueError("training.test_split 0: a forecast is tested on the series' last part, in time order; "
                             "use 0.05 to 0.5")
        if opt in FULL_BATCH:
            why = f"{opt} takes full-batch steps with a line search, which needs a deterministic loss"
            if t.batch_size is not None and t.batch_size < 256:
                raise ValueError(f"{opt} needs the whole training set or large batches: leave training.batch_size "
                                 "unset (whole set) or set it to 256 or more")
            if _has_dropout(self.architecture):
                raise ValueError(f"{why}: set the architecture's dropout to 0, or use a minibatch optimizer "
                                 "such as adam")
            if t.augmentation is not None:
                raise ValueError(f"{why}: remove training.augmentation, or use a minibatch optimizer such as adam")
            if t.schedule is not None:
                raise ValueError(f"training.schedule does not apply to {opt}: its line search picks each step's "
                                 "length; remove the schedule")
            if t.grad_clip_norm is not None:
                raise ValueError(f"training.grad_clip_norm does not apply to {opt}: clipping would change the "
                                 "gradient its line search relies on; remove it")
        if t.early_stopping and t.early_stopping.monitor.startswith("val_") and t.validation_split == 0:
            raise ValueError(f"early stopping on {t.early_stopping.monitor} needs a validation set: set "
                             "training.validation_split above 0, or monitor train_loss")
        if t.compile == "graph":
            if t.device == "cpu":
                raise ValueError("training.compile graph captures CUDA graphs on a GPU; use device auto or cuda, "
                                 "or compile auto")
            reason = static_refusal(opt, full_batch=opt in FULL_BATCH, augmenting=bool(t.augmentation and (
                                        t.augmentation.shift or t.augmentation.rotation or t.augmentation.scale)),
                                    scheduled=t.schedule is not None)
            if reason:
                raise ValueError(f"training.compile graph cannot be used: {reason}; use compile auto or none")
        if t.precision == "bf16" and t.device == "cpu":
            raise ValueError("precision bf16 is autocast on a GPU; use device auto or cuda, or precision fp32")
        if t.loss == "mae" and self.task == "classification":
            raise ValueError("loss mae is for numeric targets; classification takes cross_entropy or mse")
        # Resolve the per-optimizer defaults, so that the stored spec says what actually ran.
        if t.learning_rate is None:
            t.learning_rate = DEFAULT_LEARNING_RATE[opt]
        if t.batch_size is None and opt not in FULL_BATCH:
            t.batch_size = 64
        return self


def _has_dropout(architecture) -> bool:
    dropout = getattr(architecture, "dropout", 0.0)
    return any(dropout) if isinstance(dropout, list) else dropout > 0
