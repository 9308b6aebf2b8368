"""Crash safety of the training stages: SIGKILL `rlhf pretrain`, `sft`, `reward` and `ppo` at random
moments of runs that checkpoint every step, restart each (`--resume` once a checkpoint exists, a
fresh start otherwise) until it finishes, and compare with one uninterrupted run of the same
configuration (CPU, one thread, fixed seed).

After every kill:
  - every complete checkpoint (a `step-*` dir with `rlhf.json`) holds, tensor for tensor and bit
    for bit, what the uninterrupted run's checkpoint of that step holds (weights and optimizer);
  - the run folder either does not load as a model (no `config.json`) or holds the whole final
    export, equal to the uninterrupted run's (weights, `rlhf.json`'s step, tokenizer, and the
    stage's extras: `reward.json`, `value/`).
Every process that is not killed must exit 0 (a `--resume` that refuses or fails is a failure),
and every finished run must end with the uninterrupted run's final weights bit for bit and its
`metrics.jsonl` (every step once, the same values apart from timings).

Kills come at a uniformly random delay after the start (covering loading, training, checkpoint
writes and the export), just after the process is seen writing a checkpoint (`.tmp-step-*`) or
the final export (`.tmp-export`), or up to 50 ms after the last checkpoint appears, so that
those short windows are hit too.

    python bench/kill_resume.py --kills 20            # the full campaign (all four stages)
    python bench/kill_resume.py --kills 3 --stages sft,ppo
tests/python/test_crash_resume.py runs a short campaign (RLHF_KILLS, 5 per stage by default).
"""
import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ["pretrain", "sft", "reward", "ppo"]

# Steps (iterations for PPO) per run: long enough for several kills per run, short enough that
# an uninterrupted run takes a few seconds on one thread.
STEPS = {"pretrain": 60, "sft": 40, "reward": 45, "ppo": 20}


class Failure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# --- safetensors, read without a framework -------------------------------------------------------

def tensors(path):
    """{name: (dtype, shape, raw bytes)} of a safetensors file; raises on a malformed file."""
    with open(path, "rb") as f:
        data = f.read()
    check(len(data) >= 8, f"{path}: {len(data)} bytes, shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    check(8 + n <= len(data), f"{path}: header of {n} bytes past the end of the file")
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        check(b <= len(body), f"{path}: tensor {name} ends past the end of the file")
        out[name] = (t["dtype"], tuple(t["shape"]), body[a:b])
    return out


def max_abs_diff(a, b):
    """Largest |a - b| over two F32/F64 tensors (for the failure message)."""
    import numpy as np
    kind = {"F32": np.float32, "F64": np.float64}.get(a[0])
    if kind is None or a[:2] != b[:2]:
        return float("nan")
    x, y = np.frombuffer(a[2], kind), np.frombuffer(b[2], kind)
    return float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0))


def same_tensors(path, ref_path):
    """Asserts two safetensors files hold the same tensors bit for bit."""
    a, b = tensors(path), tensors(ref_path)
    check(sorted(a) == sorted(b), f"{path}: tensor names differ from {ref_path}")
    differ = {n: max_abs_diff(a[n], b[n]) for n in a if a[n] != b[n]}
    check(not differ, f"{path} differs from {ref_path} in {len(differ)} tensors "
                      f"(max |diff| {max(differ.values(), default=0):.3g}): {sorted(differ)[:5]}")


def safetensors_under(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d)
                  for f in fs if f.endswith(".safetensors"))


# --- the run folder -----------------------------------------------------------------------------

def checkpoints(out):
    """Complete checkpoints as {step: dir}: the rule `rlhf_train::checkpoint::list` applies."""
    d = os.path.join(out, "checkpoints")
    found = {}
    for name in os.listdir(d) if os.path.isdir(d) else []:
        if name.startswith("step-") and name[5:].isdigit() \
                and os.path.isfile(os.path.join(d, name, "rlhf.json")):
            found[int(name[5:])] = os.path.join(d, name)
    return found


def latest(out):
    return max(checkpoints(out), default=0)


def moment(out, final_step, before):
    """Where the run was when it died, as its folder shows it (`before`: the newest checkpoint
    when this launch started)."""
    if not os.path.isdir(out):
        return "start-up"
    if any(n.startswith(".tmp-export") for n in os.listdir(out)):
        return "export"
    d = os.path.join(out, "checkpoints")
    if os.path.isdir(d) and any(n.startswith(".tmp-") for n in os.listdir(d)):
        return "checkpoint write"
    step = latest(out)
    if step == 0:
        return "before the first checkpoint"
    if step == final_step:
        return "after the last step (evaluation, export)"
    if step > before:
        return "training"
    return "loading, or the launch's first step"


def check_checkpoints(out, ref):
    """Every complete checkpoint equals the uninterrupted run's checkpoint of its step."""
    ref_ckpts = checkpoints(ref)
    for step, d in checkpoints(out).items():
        with open(os.path.join(d, "rlhf.json")) as f:
            info = json.load(f)
        check(info["step"] == step, f"{d}: rlhf.json says step {info['step']}")
        files = safetensors_under(d)
        check(files == safetensors_under(ref_ckpts[step]),
              f"{d}: files {files} differ from the uninterrupted run's")
        for rel in files:
            same_tensors(os.path.join(d, rel), os.path.join(ref_ckpts[step], rel))


def loads(out):
    return any(os.path.exists(os.path.join(out, m)) for m in ("config.json", "adapter_config.json"))


def check_export(out, ref, final_step):
    """A run folder that loads holds the whole final export, equal to the uninterrupted run's."""
    if not loads(out):
        return False
    for rel in safetensors_under(ref):
        if not rel.startswith("checkpoints"):
            path = os.path.join(out, rel)
            check(os.path.exists(path), f"{out} loads but lacks {rel}")
            same_tensors(path, os.path.join(ref, rel))
    for rel in ["config.json", "rlhf.json", "tokenizer.json", "tokenizer_config.json", "reward.json",
                "value/config.json"]:
        if os.path.exists(os.path.join(ref, rel)):
            path = os.path.join(out, rel)
            check(os.path.exists(path), f"{out} loads but lacks {rel}")
            if rel != "rlhf.json":  # it records timings and keep_checkpoints
                with open(path, "rb") as a, open(os.path.join(ref, rel), "rb") as b:
                    check(a.read() == b.read(), f"{path} differs from the uninterrupted run's")
    with open(os.path.join(out, "rlhf.json")) as f:
        step = json.load(f)["step"]
    check(step == final_step, f"{out}/rlhf.json: step {step}, expected {final_step}")
    return True


def metrics(out):
    """metrics.jsonl's lines without the timing fields (which differ between runs)."""
    timing = ("time", "elapsed", "per_s")
    lines = []
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            v = json.loads(line)
            lines.append({k: x for k, x in v.items() if not any(t in k for t in timing)})
    return lines


# --- the stages ---------------------------------------------------------------------------------

class Campaign:
    def __init__(self, bin_path, work, seed=0, log=print):
        self.bin, self.work, self.log = bin_path, work, log
        self.rng = random.Random(seed)
        self.inputs_ready = False

    def rlhf(self, *args):
        r = subprocess.run([self.bin, "--device", "cpu", "--threads", "1", *map(str, args)],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"rlhf {' '.join(map(str, args))} failed:\n{r.stderr}")

    def prepare(self):
        """The task world, a nano base model, rankings and a reward model: the stages' inputs."""
        if self.inputs_ready:
            return
        w = self.work
        for d in ["world", "base", "rm"]:
            shutil.rmtree(os.path.join(w, d), ignore_errors=True)
        self.rlhf("data", "--out", f"{w}/world", "--set", "corpus_docs=500",
                  "--set", "sft_examples=60", "--set", "prompts=50", "--set", "eval_examples=20")
        self.rlhf("pretrain", "--data", f"{w}/world", "--out", f"{w}/base", "--preset", "nano",
                  "--set", "trainer.max_steps=20", "--set", "trainer.eval_every=0",
                  "--set", "trainer.checkpoint_every=0")
        # Four responses per prompt, best first: the demonstration, its first half, another
        # prompt's answer, a refusal.
        with open(f"{w}/world/sft.jsonl") as f:
            demos = [json.loads(line) for line in f][:40]
        with open(f"{w}/rankings.jsonl", "w") as f:
            for i, d in enumerate(demos):
                c = d["completion"]
                other = demos[(i + 1) % len(demos)]["completion"]
                responses = [c, c[:len(c) // 2] or "...", other, "I don't know."]
                f.write(json.dumps({"prompt": d["prompt"], "responses": responses,
                                    "ranking": [0, 1, 2, 3]}) + "\n")
        self.rlhf("reward", "--model", f"{w}/base", "--data", f"{w}/rankings.jsonl",
                  "--out", f"{w}/rm", "--set", "trainer.batch_size=4")
        self.inputs_ready = True

    def command(self, stage, out, keep):
        """(arguments, final step) of a stage's run into `out`, checkpointing every step and
        keeping `keep` checkpoints (0: all)."""
        w = self.work
        every = ["--set", "trainer.checkpoint_every=1", "--set", f"trainer.keep_checkpoints={keep}"]
        if stage == "pretrain":
            args = ["pretrain", "--data", f"{w}/world", "--preset", "nano",
                    "--set", f"trainer.max_steps={STEPS[stage]}", "--set", "trainer.batch_size=8",
                    "--set", "trainer.eval_every=10", *every]
            final = STEPS[stage]
        elif stage == "sft":
            args = ["sft", "--model", f"{w}/base", "--data", f"{w}/world/sft.jsonl",
                    "--set", f"trainer.max_steps={STEPS[stage]}", "--set", "trainer.batch_size=8",
                    "--set", "trainer.eval_every=8", *every]
            final = STEPS[stage]
        elif stage == "reward":
            # 40 prompts, 4 held out, batches of 4: 9 steps an epoch.
            args = ["reward", "--model", f"{w}/base", "--data", f"{w}/rankings.jsonl",
                    "--set", f"epochs={STEPS[stage] // 9}", "--set", "trainer.batch_size=4",
                    *every]
            final = STEPS[stage]
        else:
            args = ["ppo", "--policy", f"{w}/base", "--reward", f"{w}/rm",
                    "--prompts", f"{w}/world/prompts.jsonl",
                    "--set", f"iterations={STEPS[stage]}", "--set", "rollout_batch=8",
                    "--set", "minibatches=2", "--set", "ppo_epochs=2",
                    "--set", "max_new_tokens=12", "--set", "eval_every=0",
                    "--set", "checkpoint_every=1", "--set", f"keep_checkpoints={keep}"]
            final = STEPS[stage]
        return [*args, "--out", out], final

    def start(self, args, log_path):
        with open(log_path, "w") as err:
            return subprocess.Popen([self.bin, "--device", "cpu", "--threads", "1", *args],
                                    stdout=subprocess.DEVNULL, stderr=err)

    def reference(self, stage):
        """The uninterrupted run (every checkpoint kept); returns (dir, wall seconds, seconds to
        its first checkpoint)."""
        ref = os.path.join(self.work, stage, "reference")
        shutil.rmtree(ref, ignore_errors=True)
        os.makedirs(os.path.dirname(ref), exist_ok=True)
        args, final = self.command(stage, ref, keep=0)
        t0 = time.time()
        proc = self.start(args, ref + ".log")
        first = None
        while proc.poll() is None:
            if first is None and latest(ref) > 0:
                first = time.time() - t0
            time.sleep(0.005)
        wall = time.time() - t0
        check(proc.returncode == 0, f"the uninterrupted {stage} run failed:\n{open(ref + '.log').read()}")
        check(sorted(checkpoints(ref)) == list(range(1, final + 1)),
              f"{stage}: the uninterrupted run's checkpoints are {sorted(checkpoints(ref))}")
        return ref, wall, first or wall

    def kill_when(self, proc, out, final, mode, max_delay):
        """Waits for the moment `mode` picks (a random delay; a checkpoint being written; the
        export being written; the last checkpoint written, plus up to 50 ms), then SIGKILLs
        `proc`; False if it ended first."""
        if mode == "time":
            try:
                proc.wait(timeout=self.rng.uniform(0, max_delay))
                return False
            except subprocess.TimeoutExpired:
                pass
        else:
            ckpts = os.path.join(out, "checkpoints")
            while proc.poll() is None:
                if mode == "export":
                    seen = os.path.isdir(os.path.join(out, ".tmp-export"))
                elif mode == "end":
                    seen = latest(out) == final
                else:
                    seen = os.path.isdir(ckpts) and any(n.startswith(".tmp-step")
                                                         for n in os.listdir(ckpts))
                if seen:
                    time.sleep(self.rng.uniform(0, 0.05 if mode == "end" else 0.003))
                    break
                time.sleep(0.0005)
        if proc.poll() is not None:
            return False
        proc.kill()
        proc.wait()
        return True

    def stage(self, stage, kills):
        """Kills runs of `stage` until `kills` kills, each run restarted until it finishes;
        returns the figures."""
        self.prepare()
        ref, wall, first = self.reference(stage)
        ref_metrics = metrics(ref)
        # A kill within this delay lands anywhere from start-up to a few steps past the first
        # checkpoint, so that a run takes several kills before it gets through.
        max_delay = first + 2 * (wall - first) / 6
        figures = {"stage": stage, "kills": 0, "resumes": 0, "fresh_restarts": 0, "runs": 0,
                   "uninterrupted_s": round(wall, 2), "moments": {}, "loaded_after_kill": 0,
                   "resumes_that_progressed": 0}
        t0 = time.time()
        while figures["kills"] < kills:
            figures["runs"] += 1
            out = os.path.join(self.work, stage, f"run-{figures['runs']}")
            shutil.rmtree(out, ignore_errors=True)
            args, final = self.command(stage, out, keep=2)
            launches = 0
            while True:
                launches += 1
                resume = latest(out) > 0
                before = latest(out)
                log_path = f"{out}.{launches}.log"
                proc = self.start(args + (["--resume"] if resume else []), log_path)
                if figures["kills"] < kills:
                    mode = self.rng.choices(["time", "checkpoint", "export", "end"],
                                            [6, 2, 1, 1])[0]
                    killed = self.kill_when(proc, out, final, mode, max_delay)
                else:
                    proc.wait()
                    killed = False
                with open(log_path) as f:
                    err = f.read()
                check("panicked" not in err, f"{stage}: a panic:\n{err}")
                if resume:
                    figures["resumes"] += 1
                elif launches > 1:
                    figures["fresh_restarts"] += 1
                if killed:
                    figures["kills"] += 1
                    where = moment(out, final, before)
                    figures["moments"][where] = figures["moments"].get(where, 0) + 1
                    check_checkpoints(out, ref)
                    figures["loaded_after_kill"] += check_export(out, ref, final)
                    check(latest(out) >= before, f"{stage}: checkpoint step went back from "
                                                 f"{before} to {latest(out)}")
                    figures["resumes_that_progressed"] += resume and latest(out) > before
                    continue
                check(proc.returncode == 0,
                      f"{stage}: {'a resume' if resume else 'a run'} exited with "
                      f"{proc.returncode} (from step {before}):\n{err}")
                figures["resumes_that_progressed"] += resume
                break
            # The finished run: the uninterrupted run's final checkpoint, export and log.
            check_checkpoints(out, ref)
            check(latest(out) == final, f"{stage}: ended at step {latest(out)}, not {final}")
            check(check_export(out, ref, final), f"{stage}: the finished run does not load")
            got = metrics(out)
            check(got == ref_metrics, f"{stage}: metrics.jsonl differs from the uninterrupted "
                                      f"run's ({len(got)} vs {len(ref_metrics)} lines)")
        figures["campaign_s"] = round(time.time() - t0, 1)
        self.log(json.dumps(figures))
        return figures


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="kills per stage (default 20)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated (default all)")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill moments (default 0)")
    p.add_argument("--bin", default=os.environ.get("RLHF_BIN", f"{ROOT}/target/release/rlhf"))
    p.add_argument("--work", help="keep the runs here (default: a temporary directory)")
    a = p.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="rlhf-kill-")
    os.makedirs(work, exist_ok=True)
    c = Campaign(a.bin, work, a.seed)
    t0 = time.time()
    results = [c.stage(s, a.kills) for s in a.stages.split(",")]
    print(f"all stages passed in {time.time() - t0:.0f} s: "
          + "; ".join(f"{r['stage']} {r['kills']} kills, {r['resumes']} resumes, "
                      f"{r['runs']} runs bit for bit" for r in results))
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        sys.exit(f"FAILED: {e}")
