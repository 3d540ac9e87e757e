"""What the benchmark scripts share: one measurement in a fresh process, and the toy preference pairs they train on."""
import multiprocessing as mp
import random


def run_isolated(target, *args):
    """Call target(*args, queue) in a spawned process; return the one object it puts on the queue."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def dpo_pairs(n: int, seed: int = 0) -> list[dict]:
    """n toy preference pairs: two demonstration-like responses per ToyTask prompt, the better one (by the toy
    task's true reward) as chosen, both rewards kept (rev_kl's soft labels need them)."""
    from alignment.core.toy import ToyTask, true_reward

    task = ToyTask(seed)
    rng = random.Random(f"{seed}/bench/pairs")
    rows = []
    for r in task.prompts(n):
        a, b = (" " + task.demonstration(r["prompt"], rng) for _ in range(2))
        ra, rb = true_reward(r["prompt"], a), true_reward(r["prompt"], b)
        if rb > ra:
            a, b, ra, rb = b, a, rb, ra
        rows.append({"id": r["id"], "prompt": r["prompt"], "chosen": a, "rejected": b, "chosen_reward": ra,
                     "rejected_reward": rb})
    return rows
