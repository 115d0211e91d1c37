"""``run(cfg) -> Report``: the only place that wires method, model pool and task pool."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fusion_bench.errors import FusionBenchError
from fusion_bench.report import Report, average_metrics, completed_report, config_key
from fusion_bench.utils.hub import tiny_builds

log = logging.getLogger(__name__)


def _reset_peak_rss() -> None:
    """Reset this process's peak-RSS mark (Linux ``clear_refs``), so that each run of a
    multirun measures its own peak rather than the largest of all runs so far."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: the peak falls back to the process-lifetime ru_maxrss


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):  # peak RSS since start or the last reset, in kB
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _peak_memory_mb(fabric) -> dict[str, float]:
    import torch

    out = {"cpu_peak_rss": _peak_rss_mb()}
    if fabric is not None and fabric.device.type == "cuda":
        out["cuda_max_allocated"] = torch.cuda.max_memory_allocated(fabric.device) / 2**20
    return out


@contextmanager
def _timed(timings: dict[str, float], phase: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = round(time.perf_counter() - start, 3)


def build_fabric(fabric_cfg: Mapping[str, Any] | None, output_dir: Path | None):
    """Lightning Fabric from the ``fabric`` config group, with the configured metric loggers."""
    from lightning.fabric import Fabric

    cfg = dict(fabric_cfg or {})
    logger_names = cfg.pop("loggers", None) or []
    loggers = []
    if output_dir is not None:
        for name in logger_names:
            if name == "tensorboard":
                from lightning.fabric.loggers import TensorBoardLogger

                loggers.append(TensorBoardLogger(root_dir=str(output_dir), name="logs", version=""))
            elif name == "csv":
                from lightning.fabric.loggers import CSVLogger

                loggers.append(CSVLogger(root_dir=str(output_dir), name="logs", version=""))
            else:
                raise FusionBenchError(
                    f"fabric.loggers: unknown logger '{name}'; choose from tensorboard, csv"
                )
    try:
        fabric = Fabric(loggers=loggers, **cfg)
    except (ValueError, RuntimeError, TypeError) as e:
        raise FusionBenchError(f"fabric: cannot set up {cfg} ({e})") from None
    if _starts_own_processes(fabric) and _in_hydra_multirun():
        raise FusionBenchError(
            f"fabric: {fabric.world_size} processes cannot be started inside a Hydra multirun "
            "(-m): Lightning starts ranks 1.. by re-running the command line, which here is the "
            "whole sweep. Run each cell on its own (without -m), or on Slurm use "
            f"hydra/launcher=submitit_slurm with hydra.launcher.tasks_per_node={fabric.world_size} "
            "(Slurm starts the ranks)"
        )
    # With strategy=ddp this starts ranks 1.. (Lightning re-runs the command with the same
    # hydra.run.dir) and joins the process group; every rank then runs all of ``run``.
    fabric.launch()
    return fabric


def _starts_own_processes(fabric) -> bool:
    """Whether ``fabric.launch()`` would start the other ranks itself (rather than a scheduler
    such as Slurm, or ``torchrun``, having started every rank already)."""
    strategy = fabric.strategy
    env = getattr(strategy, "cluster_environment", None)
    external = env is not None and env.creates_processes_externally
    return fabric.world_size > 1 and strategy.launcher is not None and not external


def _in_hydra_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # not running under Hydra (e.g. called from Python)
        return False


def _where(cfg, group: str) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        choice = HydraConfig.get().runtime.choices.get(group)
    except Exception:  # not running under Hydra (e.g. called from Python)
        choice = None
    return f"{group} '{choice}'" if choice else group


def run(
    cfg, output_dir: str | Path | None = None, run_info: dict[str, Any] | None = None
) -> Report:
    """Fuse and evaluate as configured, write ``report.json`` into ``output_dir``.

    Args:
        cfg: the composed config (``method``, ``modelpool``, ``taskpool``, ``fabric``, ``seed``,
            ``save_path``, ``report_name``).
        output_dir: where the report and logs go (the Hydra job dir under the CLI).
        run_info: how the run was invoked (group choices, overrides), copied into the report.

    Returns:
        The report (also written to ``output_dir / report_name`` when ``output_dir`` is given).
    """
    from lightning.fabric.utilities.seed import seed_everything
    from omegaconf import OmegaConf

    from fusion_bench.utils.instantiate import instantiate

    out = Path(output_dir) if output_dir is not None else None
    timings: dict[str, float] = {}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    key = config_key(resolved, tiny_builds(resolved))
    if out is not None:
        done = _resume(out, cfg, key)
        if done is not None:
            return done

    _reset_peak_rss()
    with _timed(timings, "setup"):
        method = instantiate(cfg.method, _where(cfg, "method"))
        pool = instantiate(cfg.modelpool, _where(cfg, "modelpool"))
        taskpool = instantiate(cfg.taskpool, _where(cfg, "taskpool"))
        taskpool.bind_modelpool(pool)
        fabric = build_fabric(cfg.get("fabric"), out)
        seed_everything(int(cfg.get("seed", 0)), verbose=False)
        if fabric.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(fabric.device)

    with _timed(timings, "load"):
        if pool.validate_models:
            log.info("validating model pool (%d experts)", len(pool))
            pool.validate()

    with _timed(timings, "fuse"):
        method.fabric = fabric
        fused = method.run(pool)

    if cfg.get("save_path"):
        if isinstance(fused, Mapping):
            raise FusionBenchError(
                "save_path: this method returns one model per task, not a fused model; drop save_path"
            )
        if fabric.is_global_zero:  # every rank holds the same fused model: one writer
            with _timed(timings, "save"):
                pool.save_model(fused, str(cfg.save_path))
                log.info("saved fused model to %s", cfg.save_path)

    with _timed(timings, "evaluate"):
        metrics = taskpool.evaluate(fused, fabric=fabric)

    report = Report(
        config=resolved,
        metrics=metrics,
        average=average_metrics(metrics),
        timings_s=timings,
        peak_memory_mb=_peak_memory_mb(fabric),
        task_metadata=taskpool.metadata(),
        method_info=method.extra_report(),
        run_info=dict(run_info or {}),
        config_key=key,
    )
    from lightning.fabric.loggers import CSVLogger

    for logger in fabric.loggers:
        if not isinstance(logger, CSVLogger):  # Fabric's CSV logger has no hparams file
            logger.log_hyperparams(_flat(resolved))
    flat = {f"{task}/{k}": v for task, m in metrics.items() for k, v in m.items()}
    flat.update({f"average/{k}": v for k, v in report.average.items()})
    fabric.log_dict(flat)
    for logger in fabric.loggers:
        logger.finalize("success")
    # Under DDP every rank reaches this point with the same metrics (the task pool reduced them)
    # and the same method state; rank 0 alone writes, so no file is written twice or torn.
    # (Fabric's loggers above already log from rank 0 only.)
    if out is not None and fabric.is_global_zero:
        artifacts = method.artifacts()
        if artifacts:
            from safetensors.torch import save_file

            # written before the report: a complete report implies complete artifacts
            tmp = out / ".method_artifacts.safetensors.tmp"
            save_file({k: v.detach().cpu().contiguous() for k, v in artifacts.items()}, tmp)
            tmp.replace(out / "method_artifacts.safetensors")
        report.write(out / cfg.get("report_name", "report.json"))
    return report


def _resume(out: Path, cfg, key: str) -> Report | None:
    """The complete report of this config in ``out`` (the cell is done), else ``None`` after
    removing what an earlier attempt left: a report of another config, an error record.

    With ``skip_completed=false`` the cell always runs again (its report is replaced).
    """
    path = out / cfg.get("report_name", "report.json")
    if cfg.get("skip_completed", True):
        done = completed_report(path, key)
        if done is not None:
            log.info("%s is complete for this config: skipping the run", path)
            return done
    if path.exists():
        log.warning("%s is stale (another config or incomplete): running again", path)
        path.unlink()
    (out / "error.json").unlink(missing_ok=True)
    return None


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{key}/"))
        else:
            out[key] = v if isinstance(v, int | float | str | bool) else str(v)
    return out
