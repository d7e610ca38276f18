"""Where a run reports as it trains: experiment trackers (``report_to``) and the console progress bar.

Both live on the main process only and are optional: a tracker that is not installed is a clear error naming the
package, never a silent no-op, and a plot or a tracker never decides whether the weights are saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medtune.errors import ConfigError


class Reporters:
    """Optional experiment trackers named in ``report_to`` (tensorboard, mlflow, wandb), if installed."""

    def __init__(self, names: Sequence[str], run_dir: Path, config: dict[str, Any]) -> None:
        self.sinks: list[Any] = []
        for name in names:
            if name in ("none", ""):
                continue
            try:
                if name == "tensorboard":
                    from torch.utils.tensorboard import SummaryWriter

                    self.sinks.append(("tensorboard", SummaryWriter(str(run_dir / "tensorboard"))))
                elif name == "mlflow":
                    import mlflow

                    mlflow.start_run(run_name=run_dir.name)
                    mlflow.log_params({k: str(v) for k, v in config.items()})
                    self.sinks.append(("mlflow", mlflow))
                elif name == "wandb":
                    import wandb

                    self.sinks.append(("wandb", wandb.init(name=run_dir.name, config=config, dir=str(run_dir))))
                else:
                    raise ConfigError(f"unknown report_to '{name}' (tensorboard, mlflow, wandb)")
            except ImportError as exc:
                raise ConfigError(f"report_to {name} needs the '{name}' package, which is not installed "
                                  f"({exc.name}); install it or drop --report-to {name}") from None

    def log(self, step: int, values: dict[str, float]) -> None:
        for kind, sink in self.sinks:
            if kind == "tensorboard":
                for k, v in values.items():
                    sink.add_scalar(f"train/{k}", v, step)
            elif kind == "mlflow":
                sink.log_metrics(values, step=step)
            else:
                sink.log(values, step=step)

    def close(self) -> None:
        for kind, sink in self.sinks:
            if kind == "tensorboard":
                sink.close()
            elif kind == "mlflow":
                sink.end_run()
            else:
                sink.finish()


class Progress:
    """A rich progress bar with loss and tokens/s (rank 0 only; silent when disabled)."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:.0f} tok/s"),
                            TimeRemainingColumn(), transient=False)
        self.task = self.bar.add_task("train", total=total, completed=done, loss=float("nan"), tps=0.0)
        self.bar.start()

    def update(self, loss: float, tps: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=loss, tps=tps)

    def note(self, text: str) -> None:
        """A line printed above the bar (a validation's result); logged instead when there is no bar."""
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            import logging

            logging.getLogger("medtune.training").info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
