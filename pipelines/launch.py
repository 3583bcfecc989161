"""Build cells through Dagster from a command line, in this process, as a recorded run."""

from __future__ import annotations

import logging
import warnings

from dagster import DagsterInstance
from sqlalchemy.exc import IntegrityError

from pipelines.tags import (
    CELLS_TAG,
    H3_CELLS,
    ORIGIN_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
)

log = logging.getLogger(__name__)


# Maximum attempts to add partition keys while other processes add the same keys.
PARTITION_ADD_TRIES = 5


def add_partitions(instance: DagsterInstance, cells: list[str]) -> list[str]:
    """Add the cells that are not partitions yet and return every partition key in order.

    Another process may add the same keys between the read and the write, and the storage
    then rejects the write with a unique constraint error. The keys are read again then.
    """
    attempt = 1
    while True:
        existing = instance.get_dynamic_partitions(H3_CELLS)
        known = set(existing)
        new = [cell for cell in cells if cell not in known]
        if not new:
            return existing
        try:
            instance.add_dynamic_partitions(H3_CELLS, new)
            return instance.get_dynamic_partitions(H3_CELLS)
        except IntegrityError as error:
            if attempt >= PARTITION_ADD_TRIES:
                raise
            attempt += 1
            log.info("another process added partitions meanwhile (%s); reading them again", error)


def partition_range_tags(instance: DagsterInstance, cells: list[str]) -> dict[str, str]:
    """Add `cells` as partitions where missing and return the run tags that cover them."""
    order = {key: index for index, key in enumerate(add_partitions(instance, cells))}
    ranked = sorted(cells, key=order.__getitem__)
    return {
        CELLS_TAG: ",".join(cells),
        RANGE_START_TAG: ranked[0],
        RANGE_END_TAG: ranked[-1],
    }


def build_cells_in_process(cells: list[str], origin: str) -> str:
    """Run the `build_cells` job for `cells` in this process; return the Dagster run id."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pipelines.definitions import defs

        job = defs.resolve_job_def("build_cells")
    instance = DagsterInstance.get()
    tags = partition_range_tags(instance, cells)
    tags[ORIGIN_TAG] = origin
    # Step events at INFO, not DEBUG, so a command-line build prints a readable log.
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    result = job.execute_in_process(run_config=run_config, instance=instance, tags=tags)
    if not result.success:
        raise RuntimeError(f"Dagster run {result.run_id} failed")
    return result.run_id
