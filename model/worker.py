"""Gunicorn's gthread worker, telling the app how long each request waited for a request thread.

A gthread worker hands each request to a pool of GUNICORN_THREADS threads. When every thread is
busy (each holds a request waiting for the batcher), the next requests wait for one in the pool's
queue, before any code of the app runs. The batcher's admission promises a bound on the whole
wait, so it must know that part too: this worker stamps each request when it is handed to the
pool and puts the time until a thread picked it up in the WSGI environ (THREAD_WAIT_KEY, seconds).
Without it, a service whose engine outruns its threads (a fast CPU, one-text requests) queues
the excess where admission cannot see it, and admitted requests wait far beyond the limit.
"""

import threading
import time

from gunicorn.workers.gthread import ThreadWorker

THREAD_WAIT_KEY = "sentiment.thread_wait_seconds"


class ThreadWaitWorker(ThreadWorker):
    """gthread, plus environ[THREAD_WAIT_KEY]: how long the request waited in the thread pool's queue."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._handling = threading.local()  # the wait of the request each pool thread handles

    def enqueue_req(self, conn) -> None:
        # On the main loop, when a new connection is accepted or a kept-alive one becomes readable.
        conn.enqueued_at = time.perf_counter()
        super().enqueue_req(conn)

    def handle(self, conn):
        # On the pool thread, which then reads the request and calls the app (self.wsgi): the time
        # it takes to read the body, parse and tokenize is the request's own, not waiting.
        self._handling.thread_wait = time.perf_counter() - conn.enqueued_at
        return super().handle(conn)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app, handling = self.wsgi, self._handling

        def stamped(environ, start_response):
            environ[THREAD_WAIT_KEY] = handling.thread_wait
            return app(environ, start_response)

        self.wsgi = stamped
