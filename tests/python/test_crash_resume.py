"""Crash safety of `rlhf pretrain`, `sft`, `reward` and `ppo`: SIGKILLed at random moments of runs
that checkpoint every step and restarted (`--resume` once a checkpoint exists) until they finish,
each stage ends bit for bit where an uninterrupted run does, every checkpoint equals the
uninterrupted run's of its step, and the run folder never loads as a half-written model.

A short campaign (RLHF_KILLS kills per stage, 5 by default); the full one is
`python bench/kill_resume.py --kills 20` (bench/kill_resume.py holds the checks)."""
import os

import pytest

from conftest import BIN
import kill_resume

KILLS = int(os.environ.get("RLHF_KILLS", "5"))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return kill_resume.Campaign(BIN, str(tmp_path_factory.mktemp("kill")), seed=0)


@pytest.mark.parametrize("stage", kill_resume.STAGES)
def test_killed_runs_resume_to_the_uninterrupted_result(campaign, stage):
    figures = campaign.stage(stage, KILLS)
    assert figures["kills"] == KILLS
    # Every run that was killed was restarted to the end and compared.
    assert figures["resumes"] + figures["fresh_restarts"] == KILLS
