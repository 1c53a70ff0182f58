"""Experiment grids: a whole study (models x datasets x conditions) declared once in TOML, run on
this machine, a Ray cluster or Slurm, resumed wherever it stopped.

======================  =====================================================================
:mod:`.experiment`      the experiment file (tomllib) and its validation
:mod:`.jobs`            the job table: one job per (model, dataset, condition), ids and digests
:mod:`.status`          done / running / failed / partial / pending, run keys, size estimates
:mod:`.state`           per-job state files and logs
:mod:`.worker`          one job in one process: extract + probe, never raising for a failure
:mod:`.conditions`      ``base`` / ``lora:...`` conditions
:mod:`.executors`       executor registry: ``local``, ``ray``, ``slurm`` (submitit)
:mod:`.runner`          :func:`run_grid`
:mod:`.report`          :func:`grid_report`: one report per (dataset, condition) + an index
:mod:`.resources`       GPUs / CPUs / memory / time per job; size strings
======================  =====================================================================

Importing this package imports no torch.
"""

from __future__ import annotations

from .experiment import Experiment, ExperimentError, load_experiment
from .jobs import Job, expand_jobs
from .report import grid_report
from .runner import GridOutcome, run_grid
from .status import JobStatus, grid_status

__all__ = [
    "Experiment", "ExperimentError", "load_experiment", "Job", "expand_jobs", "grid_report", "GridOutcome", "run_grid",
    "JobStatus", "grid_status",
]
