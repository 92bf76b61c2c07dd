"""The dispatcher: a thread beside each worker cluster (``manage.py worker``) that sends the outbox. It listens on
the outbox's channel, so a delivery goes out as soon as the transaction that wrote it commits, and looks again every
``DUMPSITE_DISPATCH_POLL`` seconds for retries that became due. Sends run on a few threads of its own: a slow
receiver delays no other, and no delivery waits for a training to free a worker process."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connection

from .delivery import deliveries_claim, delivery_send, mails_send_due
from .services import CHANNEL

logger = logging.getLogger(__name__)


def _send_one(delivery) -> None:
    try:
        delivery_send(delivery)
    except Exception:  # noqa: BLE001 - one delivery's failure is logged; its lease makes it due again
        logger.exception("webhook delivery %s failed to be recorded", delivery.pk)
    finally:
        connection.close()  # the pool's threads hold no connection between sends


def dispatch_due(pool: ThreadPoolExecutor | None = None, *, rounds: int | None = None) -> int:
    """Send what is due now, until nothing is (or for ``rounds`` claims); returns how many deliveries and mails were
    sent. Without a ``pool``, in this thread."""
    sent, done = 0, 0
    while rounds is None or done < rounds:
        done += 1
        due = deliveries_claim(limit=settings.DUMPSITE_WEBHOOK_THREADS * 4)
        if pool is None:
            for delivery in due:
                delivery_send(delivery)
        else:
            list(pool.map(_send_one, due))
        mails = mails_send_due()
        sent += len(due) + mails
        if not due and not mails:
            break
    return sent


class Dispatcher(threading.Thread):
    def __init__(self, *, poll: float | None = None):
        super().__init__(name="outbox-dispatcher", daemon=True)
        self.poll = poll if poll is not None else settings.DUMPSITE_DISPATCH_POLL
        self.stopping = threading.Event()
        self.listening_on: object = None

    def run(self) -> None:
        pool = ThreadPoolExecutor(settings.DUMPSITE_WEBHOOK_THREADS, thread_name_prefix="webhook")
        try:
            while not self.stopping.is_set():
                try:
                    dispatch_due(pool)
                    self.wait()
                except Exception:  # noqa: BLE001 - a lost database connection must not end the dispatcher
                    logger.exception("outbox dispatcher failed; trying again")
                    close_old_connections()
                    connection.close()
                    self.listening_on = None
                    self.stopping.wait(self.poll)
        finally:
            pool.shutdown(wait=True)
            connection.close()

    def wait(self) -> None:
        """Until the outbox's channel is notified, ``poll`` seconds pass, or the dispatcher is stopped (seen within
        a second, whatever ``poll`` is)."""
        connection.ensure_connection()
        raw = connection.connection
        if self.listening_on is not raw:  # a new connection listens afresh
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
            self.listening_on = raw
        deadline = time.monotonic() + self.poll
        while not self.stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            if any(True for _ in raw.notifies(timeout=min(left, 1.0), stop_after=1)):
                return

    def stop(self) -> None:
        self.stopping.set()
