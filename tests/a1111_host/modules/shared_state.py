"""``modules.shared_state.State``: job bookkeeping, progress fields and the Interrupt flag."""

import datetime
import logging
import time

log = logging.getLogger(__name__)


class State:
    skipped = False
    interrupted = False
    stopping_generation = False
    job = ""
    job_no = 0
    job_count = 0
    job_timestamp = "0"
    sampling_step = 0
    sampling_steps = 0
    current_image = None
    textinfo = None
    time_start = None

    def interrupt(self):
        self.interrupted = True
        log.info("Received interrupt request")

    def dict(self):
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
            "textinfo": self.textinfo,
        }

    def begin(self, job: str = "(unknown)"):
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.job_no = 0
        self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.current_image = None
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job
        log.info("Starting job %s", job)

    def end(self):
        log.info("Ending job %s (%.2f seconds)", self.job, time.time() - self.time_start)
        self.job = ""
        self.job_count = 0
