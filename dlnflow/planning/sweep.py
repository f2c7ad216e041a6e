"""Dry runs of whole sweeps, and the cost predictor a sweep calls before each run it trains."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from dlnflow.core.errors import RuntimeFault
from dlnflow.experiments.sweep import Sweep
from dlnflow.planning.backends import light_backend
from dlnflow.planning.dryrun import Plan, RunPlan, pipeline_facts, plan_network, plan_run, scenario_caches
from dlnflow.runtime.cache import CallCache
from dlnflow.training.network import Network


def predict_run(net: Network, label: str) -> dict[str, Any]:
    """The predicted calls and tokens of one run (what a sweep stores beside the actual ones)."""
    return plan_network(net, label).predicted()


def plan_sweep(sweep: Sweep) -> Plan:
    """Predict every unfinished run, without loading a model; finished runs cost nothing."""
    store = None
    if sweep.cache_mode == "use" and sweep.cache_dir.exists():
        try:
            store = CallCache(sweep.cache_dir)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise RuntimeFault(f"cannot open the cache in {sweep.cache_dir}: {exc}; if it is damaged, "
                               "move the folder away (it only saves time)") from exc
    use = sweep.cache_mode == "use"
    caches = scenario_caches(store, remember=use)
    backends: dict[str, Any] = {}
    plans: list[RunPlan] = []
    prices, kinds = pipeline_facts(sweep.base)
    try:
        for s in sweep.states:
            if s.summary is not None:
                plans.append(RunPlan(s.point.label, skipped=True))
                continue
            p = s.net.pipeline
            models = {}
            for name, settings in p.models.items():
                key = json.dumps(settings, sort_keys=True, default=str)
                if key not in backends:
                    backends[key] = light_backend(settings, p.spec_path.parent)
                models[name] = backends[key]
            plans.append(plan_run(s.point.label, p, s.net.dataset, models, caches, probe=False))
    finally:
        if store is not None:
            store.close()
    patience = any(s.net.pipeline.train.patience is not None for s in sweep.pending)
    return Plan(plans, prices, kinds, patience)
