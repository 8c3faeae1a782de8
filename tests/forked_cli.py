"""`vidinv ARGV` in a process of its own per call, without paying the imports each time: one driver
process imports vidinv once and forks a child per command, whose stderr (file descriptor 2,
where C libraries such as ffmpeg and decord write too) is captured whole. A child that runs past
its time limit is killed and reported as a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

DRIVER = r"""
import json, os, signal, sys, tempfile, time, traceback
from vidinv.cli import main
import vidinv.editor, vidinv.jobs.edit, vidinv.jobs.encode, vidinv.jobs.evaluate, vidinv.planning  # imported once

for line in sys.stdin:
    argv, timeout = json.loads(line)
    err = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:
        os.dup2(err.fileno(), 2)
        sys.stdout = open(os.devnull, "w")
        try:
            code = main(argv)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        os._exit(code)
    deadline = time.monotonic() + timeout
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        code = "hang"
    else:
        code = os.waitstatus_to_exitcode(done[1])
    err.seek(0)
    print(json.dumps([code, err.read().decode(errors="replace")]), flush=True)
"""


class ForkedCli:
    """`cli.run(argv)` -> (exit code or "hang", stderr), each command in a fresh forked process."""

    def __init__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-c", DRIVER]
        self.proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, argv: list[str], timeout: float = 120) -> tuple[int | str, str]:
        self.proc.stdin.write(json.dumps([argv, timeout]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the driver process died"
        code, stderr = json.loads(line)
        return code, stderr

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
