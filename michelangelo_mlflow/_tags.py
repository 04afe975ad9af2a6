"""Every tag, label and annotation name this SDK writes, in one place.

=====================================  ===============================================
Name                                   Where, and what it holds
=====================================  ===============================================
**Run tags** (``michelangelo.``)
``michelangelo.namespace``             ``MA_NAMESPACE``: the Michelangelo project
``michelangelo.pipeline_run``          ``MA_PIPELINE_RUN_NAME``: the pipeline run
``michelangelo.task``                  dotted path of the function run by ``tracked``
``michelangelo.host``                  host name (the pod's name in Kubernetes)
``michelangelo.execution``             ``remote``, ``local``, ``interactive`` or ``script``
``michelangelo.sdk_version``           version of michelangelo-mlflow
``michelangelo.mlflow_client``         version of the MLflow client
``michelangelo.error.type``            exception class, on a FAILED or KILLED run
``michelangelo.error.message``         exception message (redacted), on a FAILED run
``michelangelo.previous_error.*``      an earlier attempt's error tags, on a resumed run
``michelangelo.spool.dropped_points``  metric points dropped at the spool's size cap
``michelangelo.task_key``              a task's identity within its pipeline run
``michelangelo.attempt``               the attempt number of a retried task
``michelangelo.previous_attempt``      the previous attempt's run id
``michelangelo.pipeline_key``          on a pipeline's parent run (and candidates)
``michelangelo.role``                  ``pipeline`` on a pipeline's parent run
``michelangelo.doctor``                on the short-lived run of ``doctor --artifacts``
**Model version tags**
``michelangelo_mlflow.model``          ``<run id>/<model name>``: what a registration is
``michelangelo_mlflow.source``         the source registered (earlier versions' key)
``michelangelo.namespace`` … ``.backend``  the linked Michelangelo Model
**Model object** (Kubernetes)
``mlflow.michelangelo.ai/*``           annotations linking back to MLflow
``app.kubernetes.io/managed-by``       ``michelangelo-mlflow``
=====================================  ===============================================

MLflow adds its own standard tags (``mlflow.source.name``, ``mlflow.user`` …).
"""

from __future__ import annotations

__all__ = [
    "ANNOTATION_PREFIX",
    "ERROR_TAGS",
    "MODEL_VERSION_LINKS",
    "TAG_PREFIX",
]

TAG_PREFIX = "michelangelo."
"""Prefix of every run tag this SDK sets."""

# --- run tags: provenance ----------------------------------------------------------------
NAMESPACE = TAG_PREFIX + "namespace"
PIPELINE_RUN = TAG_PREFIX + "pipeline_run"
TASK = TAG_PREFIX + "task"
HOST = TAG_PREFIX + "host"
EXECUTION = TAG_PREFIX + "execution"
SDK_VERSION = TAG_PREFIX + "sdk_version"
MLFLOW_CLIENT = TAG_PREFIX + "mlflow_client"
DOCTOR = TAG_PREFIX + "doctor"

# --- run tags: what happened ---------------------------------------------------------------
ERROR_TYPE = TAG_PREFIX + "error.type"
ERROR_MESSAGE = TAG_PREFIX + "error.message"
ERROR_TAGS = (ERROR_TYPE, ERROR_MESSAGE)
PREVIOUS_ERROR_PREFIX = TAG_PREFIX + "previous_error."
SPOOL_DROPPED = TAG_PREFIX + "spool.dropped_points"

# --- run tags: pipelines -------------------------------------------------------------------
TASK_KEY = TAG_PREFIX + "task_key"
ATTEMPT = TAG_PREFIX + "attempt"
PREVIOUS_ATTEMPT = TAG_PREFIX + "previous_attempt"
PIPELINE_KEY = TAG_PREFIX + "pipeline_key"
ROLE = TAG_PREFIX + "role"

# --- model version tags --------------------------------------------------------------------
MODEL_IDENTITY = "michelangelo_mlflow.model"
SOURCE = "michelangelo_mlflow.source"
MODEL_VERSION_LINKS = (
    TAG_PREFIX + "namespace",
    TAG_PREFIX + "name",
    TAG_PREFIX + "revision_id",
    TAG_PREFIX + "registry_uri",
    TAG_PREFIX + "backend",
)
"""Model version tags that link a version to its Michelangelo Model."""

# --- Model objects (Kubernetes labels and annotations) -------------------------------------
ANNOTATION_PREFIX = "mlflow.michelangelo.ai/"
"""Prefix of the labels and annotations that link a Model back to MLflow."""

A_TRACKING_URI = ANNOTATION_PREFIX + "tracking-uri"
A_NAME = ANNOTATION_PREFIX + "registered-model-name"
A_VERSION = ANNOTATION_PREFIX + "model-version"
A_RUN_ID = ANNOTATION_PREFIX + "run-id"
A_SOURCE = ANNOTATION_PREFIX + "source"
A_MODEL_URI = ANNOTATION_PREFIX + "model-uri"
L_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "michelangelo-mlflow"
