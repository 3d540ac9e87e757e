"""Orchestration of the alignment stages: the iterative driver and the recipe scripts' runners.

    driver     iterative online DPO (python -m alignment.pipeline): generate -> annotate -> (select) -> train ->
               evaluate per iteration, each stage called in this process as module.run(args)
    recipes    YAML recipes: a file of defaults, one section per stage, checked against the stages' Args
    dryrun     check a command with its module's own parser and checks, run nothing
    resume     the one resume rule: a stage's run folder, then its FOLDER.done marker; a rerun continues
    offline    the offline selection recipes (alignment/sams.sh, active.sh, difficulty.sh)
    paper      the samplers paper's recipes (alignment/safe_rlhf.sh, iterative_prompt.sh)
    toy        the toy comparisons on a CPU (alignment/toy.sh, toy_selection.sh)

Nothing is imported here, so `import alignment.pipeline.recipes` (which a stage may do) loads no orchestrator.
"""
