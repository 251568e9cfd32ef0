"""Steering and monitoring: concept vectors, steering hooks, autonomic steering within bounds, divergence
detection between internal lenses and generated text, and per-token monitor reports.

Modules: :mod:`~cortex.steering.vectors` (extraction and storage), :mod:`~cortex.steering.hooks`
(interventions and the hook context manager), :mod:`~cortex.steering.autonomic` (bounds and the controller),
:mod:`~cortex.steering.divergence` (text-level concept detector and divergence), :mod:`~cortex.steering.monitor`
(monitored generation), :mod:`~cortex.steering.report` (JSON, HTML, PNG). An offline
char-LM model and lens pack to show it on is an example, ``examples/steering_demo.py``, not part of the package.
"""

from cortex.steering.autonomic import (
    AutonomicController,
    Bound,
    BoundRule,
    ControllerSettings,
    InterventionRecord,
    build_rules,
    correction_direction,
)
from cortex.steering.divergence import (
    DivergenceReport,
    DivergenceSettings,
    TextConceptDetector,
    detect_divergence,
)
from cortex.steering.hooks import (
    INTERVENTIONS,
    SCHEDULES,
    Additive,
    Clamp,
    Contrastive,
    Intervention,
    ProbeGradient,
    Removal,
    SteeringHooks,
    SteeringSpec,
    schedule_weights,
)
from cortex.steering.monitor import MonitorResult, MonitorSettings, SteerRequest, run_monitor
from cortex.steering.vectors import (
    ConceptVector,
    VectorSet,
    attach_vectors,
    contrast_direction,
    extract_vectors,
    load_vectors,
    mean_difference,
    pca_difference,
    probe_direction,
    probe_vectors,
    save_vectors,
)

__all__ = [
    "INTERVENTIONS",
    "SCHEDULES",
    "Additive",
    "AutonomicController",
    "Bound",
    "BoundRule",
    "Clamp",
    "ConceptVector",
    "Contrastive",
    "ControllerSettings",
    "DivergenceReport",
    "DivergenceSettings",
    "Intervention",
    "InterventionRecord",
    "MonitorResult",
    "MonitorSettings",
    "ProbeGradient",
    "Removal",
    "SteerRequest",
    "SteeringHooks",
    "SteeringSpec",
    "TextConceptDetector",
    "VectorSet",
    "attach_vectors",
    "build_rules",
    "contrast_direction",
    "correction_direction",
    "detect_divergence",
    "extract_vectors",
    "load_vectors",
    "mean_difference",
    "pca_difference",
    "probe_direction",
    "probe_vectors",
    "run_monitor",
    "save_vectors",
    "schedule_weights",
]
