"""Surrogate-ranked offspring (the ``offspring`` preset): each round sends the acquisition's best children."""

from __future__ import annotations

import dataclasses

import torch

from cortex.design.job import DesignJobConfig
from cortex.design.quickstart import OFFSPRING_LOOP, quickstart_config


def test_offspring_preset_is_surrogate_ranked_and_validates():
    job = quickstart_config(evaluations=512, seed=3, preset="offspring")
    loop = job.loop_config()
    assert loop.evolution_fraction == 1.0 and loop.trust_region_fraction == 0.0
    assert loop.evolution_rank == "acquisition"  # the tree chooses what is evaluated
    assert loop.batch_size == OFFSPRING_LOOP["batch_size"] and loop.fit_every == OFFSPRING_LOOP["fit_every"]
    # the same settings go through the job's validation as a config file would
    assert DesignJobConfig.from_dict(dataclasses.asdict(job)) == job


def test_each_round_sends_the_best_ranked_novel_children():
    from tests.design.test_lambo2_loop import Assay, make_loop, seeds, small_config

    config = small_config(rounds=3, trust_region_fraction=0.0, evolution_fraction=1.0, evolution_rank="acquisition",
                          evolution_candidates=4, evolution_mutation_rate=2.0, fit_every=2)
    loop = make_loop(Assay(), config=config)
    pools = []
    breed = loop._evolution

    def recording(*args):
        ranked, scores, parent_values = breed(*args)
        w = loop.support.log_weights()  # the prior the rank used (the support grows after each round)
        pools.append((ranked, scores + w[ranked[:, :-1], ranked[:, 1:]].sum(-1)))
        return ranked, scores, parent_values

    loop._evolution = recording
    sent_rounds = []
    result = loop.run(seeds(), on_round=lambda report, lp: sent_rounds.append(report.round))
    assert len(pools) == 3 and sent_rounds == [0, 1, 2, 3]
    history = torch.tensor([r.states for r in loop.black_box.history])
    rounds = torch.tensor([r.round for r in loop.black_box.history])
    for rnd, (ranked, rank_by) in enumerate(pools, start=1):
        # ranked by acquisition + the support prior, best first
        assert bool((rank_by[:-1] >= rank_by[1:] - 1e-4).all())
        sent = history[rounds == rnd]
        assert torch.equal(sent, ranked[: len(sent)])  # exactly the top of the ranked pool
        assert len(sent) == config.batch_size
    assert [r.fit is not None for r in result.rounds[1:]] == [True, False, True]
