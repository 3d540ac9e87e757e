"""Run one measurement in a fresh process, so that peak-memory readings of variants do not mix."""
import multiprocessing as mp


def run_isolated(target, *args):
    """Call target(*args, queue) in a spawned process; return the one object it puts on the queue."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out
