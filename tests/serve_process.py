"""Running `widen-bot serve` as a real process, for tests that kill it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bot.sandbox import SlackSandbox
from receiver.sandbox_run import free_port, sandbox_env
from widen.sandbox import DamSandbox


class ServeProcess:
    def __init__(self, dam: DamSandbox, slack: SlackSandbox, database: Path, log: Path, **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            **sandbox_env(dam, slack),
            "PUBLIC_BASE_URL": self.base_url,
            "DATABASE_URL": f"sqlite:///{database}",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "DEBUG",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "receiver.cli", "serve"], env=self.env, stdout=out, stderr=out,
                cwd=Path(__file__).resolve().parents[1],
            )
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"serve exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
                try:
                    if (await client.get(self.base_url + "/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("serve did not come up")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
