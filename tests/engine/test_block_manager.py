"""The KV block manager on its own: allocation order, ref counts, prefix matching over
chained hashes, LRU eviction of cached free blocks, swap space, and the idle check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autellix.engine.kv_cache import BlockManager, CacheFull, block_hash

SIZE = 4


def chain(tokens: list[int], size: int = SIZE) -> list[int]:
    """The chained hashes of the full blocks of `tokens`, as the engine computes them."""
    hashes: list[int] = []
    for i in range(len(tokens) // size):
        hashes.append(block_hash(hashes[-1] if hashes else None, tokens[i * size : (i + 1) * size]))
    return hashes


def computed(manager: BlockManager, tokens: list[int]) -> list[int]:
    """A call that computed `tokens` into fresh blocks and registered its full ones."""
    table = manager.allocate(manager.blocks_for(len(tokens)))
    for block_id, h in zip(table, chain(tokens), strict=False):
        manager.register(block_id, h)
    return table


def test_a_fresh_manager_hands_out_blocks_from_zero_and_counts_them() -> None:
    manager = BlockManager(num_blocks=5, block_size=SIZE, num_swap_blocks=3)
    assert (manager.num_blocks, manager.num_free, manager.num_free_swap) == (5, 5, 3)
    assert manager.allocate(2) == [0, 1]
    assert manager.allocate(3) == [2, 3, 4]
    assert manager.num_free == 0
    assert [b.ref_count for b in manager.blocks] == [1] * 5
    manager.free([0, 1, 2, 3, 4])
    assert manager.num_free == 5
    manager.check_idle()


@pytest.mark.parametrize(
    "tokens, blocks", [(0, 0), (1, 1), (SIZE - 1, 1), (SIZE, 1), (SIZE + 1, 2), (3 * SIZE, 3)]
)
def test_blocks_for_rounds_up(tokens: int, blocks: int) -> None:
    assert BlockManager(1, SIZE, 0).blocks_for(tokens) == blocks


def test_allocate_takes_exactly_what_is_free_and_no_more() -> None:
    manager = BlockManager(3, SIZE, 0)
    with pytest.raises(CacheFull, match="4 blocks wanted, 3 free"):
        manager.allocate(4)
    assert manager.num_free == 3  # a refused allocation takes nothing
    assert sorted(manager.allocate(3)) == [0, 1, 2]
    with pytest.raises(CacheFull):
        manager.allocate(1)
    assert manager.allocate(0) == []


def test_block_hash_is_chained_over_the_blocks_before() -> None:
    a, b = [1, 2, 3, 4], [5, 6, 7, 8]
    assert block_hash(None, a) == block_hash(None, tuple(a))
    assert block_hash(None, a) != block_hash(None, b)
    # the same block content after a different prefix is a different block
    assert block_hash(block_hash(None, a), b) != block_hash(block_hash(None, b), b)
    assert block_hash(block_hash(None, a), b) != block_hash(None, b)


def test_a_prefix_is_matched_block_by_block_and_leaves_one_token_to_compute() -> None:
    manager = BlockManager(8, SIZE, 0)
    prompt = list(range(100, 112))  # three full blocks
    table = computed(manager, prompt)
    manager.free(table)
    assert manager.num_free == 8  # freed, but still findable
    # the same prompt: the third block is not matched, one token is always computed
    assert manager.match_prefix(prompt) == table[:2]
    # one token more: all three full blocks match
    assert manager.match_prefix([*prompt, 7]) == table
    # a prompt that differs inside the second block matches only the first
    assert manager.match_prefix([*prompt[:5], 0, *prompt[6:], 7]) == table[:1]
    # a different first block: nothing, even though later tokens agree
    assert manager.match_prefix([0, *prompt[1:], 7]) == []
    # a prompt no longer than one block has nothing to match
    assert manager.match_prefix(prompt[:SIZE]) == []


def test_matched_blocks_are_taken_and_ref_counted() -> None:
    manager = BlockManager(6, SIZE, 0)
    prompt = list(range(9))  # two full blocks and one token
    table = computed(manager, prompt)
    assert manager.num_free == 3
    # matching a block still held by the first call shares it (ref count 2)
    shared = manager.match_prefix(prompt)
    assert shared == table[:2]
    assert [manager.blocks[i].ref_count for i in table] == [2, 2, 1]
    manager.free(table)
    assert [manager.blocks[i].ref_count for i in table] == [1, 1, 0]
    assert manager.num_free == 4  # only the partial block came back
    manager.free(shared)
    assert manager.num_free == 6
    # matching free cached blocks takes them off the free list
    again = manager.match_prefix(prompt)
    assert again == table[:2] and manager.num_free == 4
    assert [manager.blocks[i].ref_count for i in again] == [1, 1]
    manager.free(again)
    manager.check_idle()


def test_without_prefix_caching_nothing_is_registered_or_matched() -> None:
    manager = BlockManager(4, SIZE, 0, prefix_caching=False)
    prompt = list(range(9))
    table = computed(manager, prompt)
    assert manager.by_hash == {} and all(manager.blocks[i].hash is None for i in table)
    manager.free(table)
    assert manager.match_prefix(prompt) == []
    assert manager.num_free == 4


def test_register_keeps_the_first_block_for_a_content_and_a_block_s_first_hash() -> None:
    manager = BlockManager(4, SIZE, 0)
    first, second = manager.allocate(2)
    manager.register(first, 11)
    manager.register(second, 11)  # the same content computed twice
    assert manager.by_hash == {11: first} and manager.blocks[second].hash is None
    manager.register(first, 22)  # a block is registered once
    assert manager.by_hash == {11: first} and manager.blocks[first].hash == 11
    # the duplicate never became findable, so it goes back to the plain free list
    manager.free([first, second])
    assert list(manager.cached_free) == [first] and second in manager.free_ids


def test_plain_free_blocks_are_used_before_cached_ones() -> None:
    manager = BlockManager(4, SIZE, 0)
    table = computed(manager, list(range(8)))  # blocks 0 and 1, both hashed
    manager.free(table)
    assert manager.allocate(2) == [2, 3]  # the never-hashed blocks first
    assert manager.match_prefix(list(range(9))) == table  # the cached ones survived


def test_eviction_takes_the_least_recently_freed_block_tail_first() -> None:
    manager = BlockManager(4, SIZE, 0)
    old = list(range(8))  # two full blocks each
    new = list(range(50, 58))
    old_table = computed(manager, old)
    new_table = computed(manager, new)
    manager.free(old_table)  # freed first: tail (block 1) before head (block 0)
    manager.free(new_table)
    assert list(manager.cached_free) == [old_table[1], old_table[0], *new_table[::-1]]
    # evicting one block takes the old prompt's tail: its head still matches
    (taken,) = manager.allocate(1)
    assert taken == old_table[1] and manager.blocks[taken].hash is None
    assert manager.match_prefix([*old, 0]) == old_table[:1]
    # the matched head is held now; the next eviction takes the new prompt's tail
    assert manager.allocate(1) == [new_table[1]]
    assert manager.match_prefix([*new, 0]) == new_table[:1]
    assert manager.num_free == 0
    manager.free([taken, new_table[1], *old_table[:1], *new_table[:1]])
    manager.check_idle()


def test_an_evicted_block_cannot_be_found_by_its_old_hash() -> None:
    manager = BlockManager(2, SIZE, 0)
    prompt = list(range(5))
    (block, _) = computed(manager, prompt)
    manager.free([block, _])
    h = manager.blocks[block].hash
    assert manager.allocate(2) == [_, block]  # the plain one, then the cached one
    assert h not in manager.by_hash
    manager.free([block])
    assert manager.match_prefix(prompt) == []


def test_freeing_a_block_twice_is_an_error() -> None:
    manager = BlockManager(2, SIZE, 0)
    (block,) = manager.allocate(1)
    manager.free([block])
    with pytest.raises(RuntimeError, match=f"block {block} freed twice"):
        manager.free([block])


def test_swap_space_is_all_or_nothing() -> None:
    manager = BlockManager(1, SIZE, num_swap_blocks=3)
    assert manager.allocate_swap(4) is None
    assert manager.num_free_swap == 3
    assert manager.allocate_swap(3) == [0, 1, 2]  # exactly what is left
    assert manager.allocate_swap(1) is None
    assert manager.allocate_swap(0) == []
    manager.free_swap([1, 0])
    assert manager.num_free_swap == 2
    with pytest.raises(AssertionError, match="swap blocks still held"):
        manager.check_idle()
    manager.free_swap([2])
    manager.check_idle()


def test_check_idle_names_the_held_blocks() -> None:
    manager = BlockManager(3, SIZE, 0)
    manager.allocate(2)
    with pytest.raises(AssertionError, match=r"KV blocks still held: \[0, 1\]"):
        manager.check_idle()


def test_lookup_statistics_add_up() -> None:
    manager = BlockManager(1, SIZE, 0)
    manager.count_lookup(10, 4)
    manager.count_lookup(6, 0)
    assert (manager.queried_tokens, manager.hit_tokens) == (16, 4)


def test_an_ended_programs_blocks_are_evicted_before_live_programs() -> None:
    manager = BlockManager(num_blocks=5, block_size=SIZE, num_swap_blocks=0)
    b_tokens, a_tokens = list(range(100, 108)), list(range(200, 212))
    b = computed(manager, b_tokens)
    manager.free(b, "B")  # B's blocks are the least recently freed
    a = computed(manager, a_tokens)
    manager.free(a, "A")
    manager.end_program("A")
    assert manager.released_blocks == 3
    taken = manager.allocate(3)  # evicts A's three, not B's two
    assert sorted(taken) == sorted(a)
    assert len(manager.match_prefix([*b_tokens, 1])) == 2  # B still finds its prefix
    assert manager.program_blocks.get("A") is None and manager.blocks[taken[0]].users == set()


def test_a_block_another_live_program_held_is_kept_in_lru_order() -> None:
    manager = BlockManager(num_blocks=4, block_size=SIZE, num_swap_blocks=0)
    shared = list(range(10, 18))
    table = computed(manager, shared)
    manager.free(table, "A")
    again = manager.match_prefix([*shared, 1])  # B's call finds the same two blocks
    manager.free(again, "B")
    manager.end_program("A")
    assert manager.released_blocks == 0  # B may still come back for them
    manager.end_program("B")
    assert manager.released_blocks == 2
    # an evicted block leaves no trace in the programs' sets
    filler = manager.allocate(4)
    assert manager.num_free == 0 and all(not manager.blocks[i].users for i in filler)


# --- retention pins ----------------------------------------------------------------------


def finished_call(manager: BlockManager, tokens: list[int], program: str) -> list[int]:
    """A call of `program` computed `tokens` and finished: its blocks are cached and free."""
    table = computed(manager, tokens)
    manager.free(table, program)
    return table


def pinned_program(manager: BlockManager, tokens: list[int], program: str, **pin) -> list[int]:
    table = finished_call(manager, tokens, program)
    args = {"expires": 10.0, "back_at": 1.0, "rank": (0,), **pin}
    manager.pin(program, table, **args)
    return table


def test_a_pinned_block_is_neither_free_nor_taken_by_the_allocator() -> None:
    manager = BlockManager(4, SIZE, 0)
    table = pinned_program(manager, list(range(8)), "agent")  # 2 blocks
    assert (manager.num_free, manager.num_pinned) == (2, 2)
    assert manager.allocate(2) == [2, 3]
    with pytest.raises(CacheFull):
        manager.allocate(1)  # LRU would have taken the agent's blocks
    assert all(manager.blocks[b].hash is not None for b in table)
    manager.check_states()


def test_a_pinned_prefix_is_found_and_returns_to_its_pin_when_freed() -> None:
    manager = BlockManager(4, SIZE, 0)
    tokens = list(range(8))
    table = pinned_program(manager, tokens, "agent")
    assert manager.match_prefix([*tokens, 99]) == table
    manager.check_states()
    manager.free(table)
    assert manager.num_pinned == 2  # still the agent's, not LRU's
    manager.check_states()


def test_a_pin_ends_when_its_ttl_passes() -> None:
    manager = BlockManager(2, SIZE, 0)
    table = pinned_program(manager, list(range(8)), "agent", expires=5.0)
    manager.expire(4.9)
    assert manager.num_pinned == 2
    manager.expire(5.0)
    assert (manager.num_pinned, manager.num_free, manager.pin_stats.expired) == (0, 2, 1)
    assert manager.match_prefix([*range(8), 99]) == table  # still cached, now in LRU


def test_the_programs_return_holds_its_pin_until_its_call_claims_the_blocks() -> None:
    manager = BlockManager(3, SIZE, 0)
    old = finished_call(manager, [50, 51, 52, 53], "other")
    mine = pinned_program(manager, list(range(8)), "agent", expires=5.0)
    manager.returned("agent", iter(chain([*range(8), 99, 98, 97, 96])))
    assert manager.pin_stats.hit == 1 and manager.pin_stats.hit_blocks == 2
    manager.expire(100.0)  # the returned call may queue past the TTL: the pin holds
    assert manager.num_pinned == 2 and manager.pin_stats.expired == 0
    manager.claim("other")  # no pin: nothing happens
    manager.claim("agent")
    assert manager.num_pinned == 0 and not manager.pins
    assert manager.allocate(1) == old  # LRU takes the other program's block first
    assert manager.match_prefix([*range(8), 99]) == mine
    manager.check_states()


def test_a_return_holds_only_the_pinned_blocks_its_prompt_begins_with() -> None:
    """A tree search's next call continues another branch: of its program's pin it holds
    the shared head; the finished branch becomes the most recently used, still cached."""
    manager = BlockManager(4, SIZE, 0)
    old = finished_call(manager, [50, 51, 52, 53], "other")
    head, branch = pinned_program(manager, list(range(8)), "search")
    manager.returned("search", iter(chain([0, 1, 2, 3, 60, 61, 62, 63, 64])))
    assert manager.pins["search"].block_ids == {head}
    assert manager.num_pinned == 1 and manager.pin_stats.hit_blocks == 1
    manager.check_states()
    assert manager.allocate(2) == [3, *old]  # the never-used block, then LRU's oldest
    assert manager.allocate(1) == [branch]  # the released branch, before the head
    manager.claim("search")
    assert manager.match_prefix([*range(4), 99]) == [head]


def test_a_pin_not_yet_returned_to_is_not_claimed() -> None:
    manager = BlockManager(2, SIZE, 0)
    pinned_program(manager, list(range(8)), "agent")
    manager.claim("agent")  # a call of the program that was not waiting on the pin
    assert manager.num_pinned == 2


def test_a_returned_programs_pin_is_evicted_last() -> None:
    manager = BlockManager(2, SIZE, 0)
    back = pinned_program(manager, [1, 2, 3, 4], "back", back_at=9.0, rank=(9,))
    soon = pinned_program(manager, [5, 6, 7, 8], "soon", back_at=1.0, rank=(0,))
    manager.returned("back", iter(chain([1, 2, 3, 4])))
    assert manager.evict_pin(lambda pin: True) is not None
    assert manager.allocate(1) == soon
    assert manager.evict_pin(lambda pin: True) is not None
    assert manager.allocate(1) == back


def test_an_evicted_pin_goes_to_host_heads_first_within_half_the_swap_pool() -> None:
    """3 blocks pinned, a swap pool of 4: retention may fill 2 of it, and copies the
    prefix's head, which a returning call can use without its tail (not the reverse)."""
    manager = BlockManager(3, SIZE, 4, host_retention=True)
    tokens = list(range(12))
    table = pinned_program(manager, tokens, "agent", expires=7.0)
    copies = manager.evict_pin(lambda pin: True)
    assert copies is not None and [block for block, _ in copies] == table[:2]
    assert manager.pin_stats.to_host == 2 and manager.num_free_swap == 2
    manager.allocate(3)  # the device reuses every block
    found = manager.match_host([*tokens, 99], skip=0)
    assert [swap for _, swap in found] == [swap for _, swap in copies]
    assert manager.match_host([*tokens, 99], skip=1) == found[1:]
    assert manager.take_host(found) == [swap for _, swap in copies]
    assert not manager.host and manager.num_free_swap == 2  # the caller frees them later
    manager.check_states()


def test_host_copies_go_when_the_program_returns_ends_or_expires() -> None:
    for end in ("claim", "end", "expire"):
        manager = BlockManager(2, SIZE, 8, host_retention=True)
        pinned_program(manager, list(range(8)), "agent", expires=7.0)
        manager.evict_pin(lambda pin: True)
        assert len(manager.host) == 2
        if end == "claim":  # its next call took its blocks: the ids come back to free
            assert len(manager.claim("agent")) == 2 and manager.num_free_swap == 6
        elif end == "end":
            manager.end_program("agent")
        else:
            manager.expire(6.9)
            assert len(manager.host) == 2
            manager.expire(7.0)
        assert not manager.host and not manager.match_host(list(range(9)), 0)
        manager.check_states()


def test_without_host_retention_an_evicted_pin_is_dropped() -> None:
    manager = BlockManager(2, SIZE, 8)
    pinned_program(manager, list(range(8)), "agent")
    assert manager.evict_pin(lambda pin: True) == [] and not manager.host


def test_an_ended_programs_pin_goes_to_the_front_of_eviction() -> None:
    manager = BlockManager(3, SIZE, 0)
    finished_call(manager, [50, 51, 52, 53], "other")
    mine = pinned_program(manager, list(range(8)), "agent")
    manager.end_program("agent")
    assert manager.num_pinned == 0 and manager.pin_stats.ended == 1
    assert sorted(manager.allocate(2)) == sorted(mine)


@pytest.mark.parametrize("front", [True, False])
@pytest.mark.parametrize("head_first", [True, False])
def test_an_ended_pin_gives_up_the_tail_of_its_prefix_first_whatever_the_block_ids(
    front: bool, head_first: bool
) -> None:
    """Eviction order never depends on block ids (a simulator's fast-forward hands out
    other ids than the step-by-step run)."""
    manager = BlockManager(3, SIZE, 0)
    table = manager.allocate(3)
    table = table if head_first else table[::-1]
    for block_id, h in zip(table, chain(list(range(12))), strict=True):
        manager.register(block_id, h)
    manager.free(table, "agent")
    manager.pin("agent", table, expires=10.0, back_at=1.0, rank=(0,))
    manager.unpin("agent", front=front)
    assert manager.allocate(2) == table[:0:-1]  # the tail, then the block before it


def test_evicting_a_pin_takes_the_one_expected_back_last_then_the_lowest_ranked() -> None:
    manager = BlockManager(3, SIZE, 0)
    soon = pinned_program(manager, [1, 2, 3, 4], "soon", back_at=1.0, rank=(9,))
    late_high = pinned_program(manager, [5, 6, 7, 8], "late-high", back_at=5.0, rank=(1,))
    late_low = pinned_program(manager, [9, 10, 11, 12], "late-low", back_at=5.0, rank=(2,))
    order = []
    while manager.evict_pin(lambda pin: True) is not None:
        order.append(manager.allocate(1))
    assert order == [late_low, late_high, soon]
    assert manager.pin_stats.evicted == 3


def test_a_pin_may_be_spared_by_who_asks() -> None:
    manager = BlockManager(2, SIZE, 0)
    pinned_program(manager, list(range(8)), "agent", rank=(3,))
    assert manager.evict_pin(lambda pin: pin.rank > (5,)) is None
    assert manager.num_pinned == 2


def test_a_second_call_of_the_program_joins_its_pin() -> None:
    manager = BlockManager(4, SIZE, 0)
    pinned_program(manager, [1, 2, 3, 4], "agent", expires=3.0, back_at=2.0)
    pinned_program(manager, [5, 6, 7, 8], "agent", expires=6.0, back_at=1.0)
    (pin,) = manager.pins.values()
    assert (len(pin.block_ids), pin.expires, pin.back_at) == (2, 6.0, 1.0)
    assert manager.pin_stats.made == 1


def test_a_block_held_by_another_call_is_pinned_once_that_call_frees_it() -> None:
    manager = BlockManager(2, SIZE, 0)
    tokens = list(range(8))
    table = computed(manager, tokens)
    shared = manager.match_prefix([*tokens, 99])  # a sibling call holds the same blocks
    manager.free(table, "agent")
    manager.pin("agent", table, expires=9.0, back_at=1.0, rank=(0,))
    assert manager.num_pinned == 0 and manager.num_free == 0
    manager.free(shared)
    assert manager.num_pinned == 2
    manager.check_states()
    manager.check_idle()  # pinned blocks are held by no call


@st.composite
def operations(draw):
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["call", "finish", "pin", "return", "claim", "expire", "evict", "end"]
                ),
                st.integers(0, 3),  # a program
                st.integers(1, 12),  # tokens, or a time
            ),
            max_size=60,
        )
    )


@settings(max_examples=300, deadline=None)
@given(operations())
def test_random_pins_and_calls_keep_every_block_in_exactly_one_state(ops) -> None:
    """...and every host copy a call finds holds the block it was found for."""
    manager = BlockManager(8, SIZE, 6, host_retention=True)
    running: dict[int, list[int]] = {}  # program -> the blocks its call holds
    on_host: dict[int, int | None] = {}  # swap id -> the hash of the block copied there

    def evict_a_pin() -> bool:
        copies = manager.evict_pin(lambda pin: True)
        for block_id, swap_id in copies or ():
            on_host[swap_id] = manager.blocks[block_id].hash
        return copies is not None

    for op, program, n in ops:
        name = f"p{program}"
        if op == "call" and program not in running:
            tokens = [program * 100 + i for i in range(n)]
            matched = manager.match_prefix(tokens)
            host = manager.match_host(tokens, len(matched))
            need = manager.blocks_for(len(tokens)) - len(matched)
            while manager.num_free < need and evict_a_pin():
                pass
            if manager.num_free < need:
                manager.free(matched)
                continue
            copied = manager.take_host(host)
            assert [on_host[s] for s in copied] == [h for h, _ in host]
            manager.free_swap(copied + manager.claim(name))  # once the round's copies ran
            table = matched + manager.allocate(need)
            for block_id, h in zip(table, chain(tokens), strict=False):
                manager.register(block_id, h)
            running[program] = table
        elif op == "finish" and program in running:
            manager.free(running.pop(program), name)
        elif op == "pin":
            blocks = [b for b, blk in enumerate(manager.blocks) if blk.hash is not None]
            manager.pin(name, blocks[:n], expires=float(n), back_at=0.0, rank=(program,))
        elif op == "return":  # a prompt that begins with the first n // 4 of a call's blocks
            manager.returned(name, iter(chain([program * 100 + i for i in range(n)])))
        elif op == "claim":
            manager.free_swap(manager.claim(name))
        elif op == "expire":
            manager.expire(float(n))
        elif op == "evict":
            evict_a_pin()
        elif op == "end" and program not in running:
            manager.end_program(name)
        manager.check_states()
    for table in running.values():
        manager.free(table)
    manager.check_idle()
    while evict_a_pin():
        pass
    assert manager.num_free == manager.num_blocks  # no block leaked
    for program in range(4):
        manager.end_program(f"p{program}")
    assert manager.num_free_swap == manager.num_swap_blocks and not manager.host


def corrupt(how: str) -> BlockManager:
    """A manager in a legal state (a call's blocks held, another's cached and free, a
    pinned program, a host copy), then broken in one way."""
    manager = BlockManager(8, SIZE, 4, host_retention=True)
    held = computed(manager, [70, 71, 72, 73, 74])  # 2 blocks, the first hashed
    cached = finished_call(manager, [50, 51, 52, 53], "other")
    pinned = pinned_program(manager, list(range(8)), "agent")
    manager.write_to_host("other", cached, expires=10.0)
    manager.check_states()
    pin = manager.pins["agent"]
    if how == "two states":
        manager.free_ids.append(cached[0])
    elif how == "no state":
        manager.free_ids.pop()
    elif how == "free listed twice":
        manager.free_ids.append(manager.free_ids[0])
        manager.cached_free.popitem()
    elif how == "negative ref count":
        manager.blocks[manager.free_ids[0]].ref_count = -1  # still in one state: free
    elif how == "pinned block of no pin":
        del manager.pin_of[pinned[0]]
        pin.block_ids.discard(pinned[0])
    elif how == "pin disagrees":
        manager.pin_of[pinned[0]] = "other"
    elif how == "pin_of without a pin":
        manager.pin_of[held[1]] = "agent"
    elif how == "hash index disagrees":
        manager.by_hash[next(iter(manager.by_hash))] = held[1]
    elif how == "free block hashed":
        manager.blocks[manager.free_ids[0]].hash = 12345
    elif how == "host copy free":
        manager.free_swap_ids.append(next(iter(manager.host.by_hash.values())))
    return manager


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("two states", "a block is in two states, or in none"),
        ("no state", "a block is in two states, or in none"),
        ("free listed twice", "a block is in two states, or in none"),
        ("negative ref count", "a negative ref count"),
        ("pinned block of no pin", "an idle pinned block belongs to no pin"),
        ("pin disagrees", "pin of agent disagrees with pin_of"),
        ("pin_of without a pin", "pin_of holds a block of no pin"),
        ("hash index disagrees", "the hash index disagrees with the blocks"),
        ("free block hashed", "a free block keeps a hash"),
        ("host copy free", "a host copy's swap block is free"),
    ],
)
def test_check_states_catches_each_broken_invariant(how: str, message: str) -> None:
    """The invariant check the engine and simulator tests lean on fails on each state it
    names, and only with its own message."""
    with pytest.raises(AssertionError, match=f"^{message}$"):
        corrupt(how).check_states()
