"""What started this process: a person, cron, GitHub Actions or another CI (``triggered_by``).

Read from the environment only; GitHub Actions also leaves the workflow, event,
run URL, ref and commit for the run's ``metadata``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any


def detect_triggered_by(
    environ: MutableMapping[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """What started this process, and what to record about it in ``metadata``."""
    env = os.environ if environ is None else environ
    explicit = env.get("SUPABASE_LOG_TRIGGERED_BY")
    if env.get("GITHUB_ACTIONS") == "true":
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        repo, run_id = env.get("GITHUB_REPOSITORY", ""), env.get("GITHUB_RUN_ID", "")
        info = {
            "workflow": env.get("GITHUB_WORKFLOW"),
            "event": env.get("GITHUB_EVENT_NAME"),
            "run_url": f"{server}/{repo}/actions/runs/{run_id}" if repo and run_id else None,
            "ref": env.get("GITHUB_REF"),
            "commit": env.get("GITHUB_SHA"),
        }
        return explicit or "github-actions", {"github": {k: v for k, v in info.items() if v}}
    for var, name in (
        ("GITLAB_CI", "gitlab-ci"),
        ("CIRCLECI", "circleci"),
        ("BUILDKITE", "buildkite"),
        ("JENKINS_URL", "jenkins"),
    ):
        if env.get(var):
            return explicit or name, {}
    if env.get("CI", "").lower() in ("1", "true", "yes"):
        return explicit or "ci", {}
    return explicit or "manual", {}
