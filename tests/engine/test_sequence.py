"""Sequence and group state: a request becomes n sequences over one prompt, salted by the request."""

from __future__ import annotations

from qwenhost.engine.llamacpp.sequence import Group, SeqState
from tests.engine.fakes import request


def test_a_group_holds_one_sequence_per_choice_with_its_own_tokens() -> None:
    group = Group.of(request("r", [1, 2, 3], n=3, salt="alice"), arrived_s=5.0)
    assert [s.choice for s in group.seqs] == [0, 1, 2] and group.salt == "alice"
    group.seqs[0].tokens.append(9)
    assert group.seqs[1].tokens == [1, 2, 3]  # choices never share a token list
    assert [s.is_follower for s in group.seqs] == [False, True, True]
    group.is_prompt_split = True  # after a preemption every choice prefills on its own
    assert not any(s.is_follower for s in group.seqs)


def test_prompt_computed_and_done() -> None:
    group = Group.of(request("r", [1, 2]), arrived_s=0.0)
    seq = group.seqs[0]
    assert not seq.is_prompt_computed and not group.is_done
    seq.state, seq.num_computed = SeqState.PREFILL, 2
    assert seq.is_prompt_computed
    seq.state = SeqState.FINISHED
    assert group.is_done and group.waiting_seqs() == []
