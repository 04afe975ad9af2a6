"""The one logging path of a tracked run: store plugins, storage, delivery, replay, sync.

Every write of an open tracked run goes one way, whoever calls MLflow::

    mlflow.log_metric / MlflowClient().log_batch / the SDK's own params, tags, status
        │  MLflow picks the tracking store by scheme (entry point mlflow.tracking_store)
        ▼
    store.py     the store plugins: a run open in this process?  no ──▶ MLflow, unchanged
        ▼ yes
    courier.py   RunSpool: redact, check params, encode (records.py)
        ▼
    storage.py   one SQLite row per record, committed  ◀── the call returns here
        ▼
    courier.py   Courier thread: batches (delivery.py), paced per server (pacing.py)
        ▼
    tracking server

``closing.py`` ends a run's spool (children first, forked writers next, its own
status last); ``replay.py`` replays leftovers of ended processes and is ``sync``.
A forked child resets everything it inherited (:func:`courier.after_fork_in_child`,
registered with ``os.register_at_fork`` when ``courier`` is first imported).

MLflow imports ``store`` while it builds its store registry, so nothing here imports
MLflow or the rest of the SDK at import time.
"""
