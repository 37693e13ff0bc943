"""Settings come from TRAINSERVE_* variables and a dotenv file, which TRAINSERVE_ENV_FILE names or turns off
(the tests turn it off, so that a developer's .env never changes what they test)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PRINT_QUEUE = "from service.platform.settings import load_settings; print(load_settings().queue)"


def queue_seen(cwd, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    out = subprocess.run([sys.executable, "-c", PRINT_QUEUE], cwd=cwd, env={**base, **env}, capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.strip()


@pytest.mark.slow  # four fresh Python processes
def test_the_dotenv_file_is_read_unless_turned_off(tmp_path):
    (tmp_path / ".env").write_text("TRAINSERVE_QUEUE=from-dotenv\n")
    (tmp_path / "other.env").write_text("TRAINSERVE_QUEUE=from-other\n")
    assert queue_seen(tmp_path) == "from-dotenv"
    assert queue_seen(tmp_path, TRAINSERVE_ENV_FILE="other.env") == "from-other"
    assert queue_seen(tmp_path, TRAINSERVE_ENV_FILE="") == "trainserve"
    assert queue_seen(tmp_path, TRAINSERVE_QUEUE="from-variable") == "from-variable"  # variables win


def test_this_test_process_reads_no_dotenv():
    assert os.environ["TRAINSERVE_ENV_FILE"] == ""
    assert not any(k.startswith("TRAINSERVE_") and k not in ("TRAINSERVE_HOME", "TRAINSERVE_ENV_FILE")
                   and not k.startswith("TRAINSERVE_TEST_") and k != "TRAINSERVE_REQUIRE_AZURITE" for k in os.environ)


@pytest.mark.slow  # two fresh Python processes
def test_secrets_are_read_from_files_in_the_secrets_folder(tmp_path):
    """On AKS the Secrets Store CSI driver mounts Key Vault secrets as files (deploy/k8s/components/azure):
    the broker URL, which holds Redis's key, never passes through an environment variable."""
    secrets = tmp_path / "secrets-store"
    secrets.mkdir()
    (secrets / "trainserve_queue").write_text("from-key-vault")
    assert queue_seen(tmp_path, TRAINSERVE_ENV_FILE="", TRAINSERVE_SECRETS_DIR=str(secrets)) == "from-key-vault"
    assert queue_seen(tmp_path, TRAINSERVE_ENV_FILE="") == "trainserve"
