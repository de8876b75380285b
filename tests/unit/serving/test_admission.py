import asyncio

import pytest

from streamrec.serving.admission import AdmissionController
from streamrec.serving.errors import Overloaded


def controller(in_flight=1, rooms=(2, 2, 2), shed=None):
    return AdmissionController(
        in_flight,
        dict(zip(("interactive", "prefetch", "background"), rooms, strict=True)),
        retry_after_s=3,
        on_shed=lambda p, r: shed.append((p, r)) if shed is not None else None,
    )


async def test_admits_up_to_max_in_flight_then_queues_and_hands_over():
    adm = controller(in_flight=1)
    await adm.acquire("interactive", 1.0)
    waiter = asyncio.create_task(adm.acquire("interactive", 1.0))
    await asyncio.sleep(0)
    assert adm.queued("interactive") == 1 and not waiter.done()
    adm.release()
    await waiter
    assert adm.in_flight == 1 and adm.queued() == 0
    adm.release()
    assert adm.in_flight == 0


async def test_full_room_sheds_with_retry_after():
    adm = controller(in_flight=1, rooms=(1, 1, 1))
    await adm.acquire("interactive", 1.0)
    first = asyncio.create_task(adm.acquire("interactive", 1.0))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as info:
        await adm.acquire("interactive", 1.0)
    assert info.value.retry_after_s == 3 and "do not retry" in str(info.value)
    first.cancel()


async def test_lower_class_waiters_are_shed_for_a_higher_class():
    shed: list[tuple[str, str]] = []
    adm = controller(in_flight=1, shed=shed)
    await adm.acquire("interactive", 1.0)
    background = asyncio.create_task(adm.acquire("background", 1.0))
    await asyncio.sleep(0)
    interactive = asyncio.create_task(adm.acquire("interactive", 1.0))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await background
    # And a low-priority arrival while a higher class waits is shed at once.
    with pytest.raises(Overloaded):
        await adm.acquire("prefetch", 1.0)
    adm.release()
    await interactive
    assert [p for p, _ in shed] == ["background", "prefetch"]


async def test_highest_class_is_served_first():
    adm = controller(in_flight=1)
    await adm.acquire("interactive", 1.0)
    order: list[str] = []

    async def wait(p):
        await adm.acquire(p, 1.0)
        order.append(p)

    pre = asyncio.create_task(wait("prefetch"))
    await asyncio.sleep(0)
    assert adm.queued("prefetch") == 1
    adm.release()
    await pre
    assert order == ["prefetch"]
    adm.release()


async def test_waiting_past_the_budget_is_shed_and_frees_the_room():
    adm = controller(in_flight=1, rooms=(1, 1, 1))
    await adm.acquire("interactive", 1.0)
    with pytest.raises(Overloaded, match="queued past its budget"):
        await adm.acquire("interactive", 0.01)
    assert adm.queued() == 0
    adm.release()
    assert adm.in_flight == 0
