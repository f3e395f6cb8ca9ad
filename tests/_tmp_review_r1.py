import pytest
from actors.position.states import State
from adapters.base import Side
from tests.support.harness import SYMBOL, Harness, venue

@pytest.mark.parametrize("stop_orders", [False, True])
def test_closed_by_hand_while_moving(stop_orders):
    h = Harness(venue(stop_orders=stop_orders), streams=True)
    h.open(qty=1.0, stop=95.0); h.run()
    assert h.core.state is State.PROTECTED
    h.outside("order", side="sell", qty=1.0, reduce_only=True)   # stream msgs queued, not delivered yet
    print("inbox before amend", [type(m).__name__ for m in h.inbox])
    r = h.amend(stop=97.0)
    print("amend", r, h.core.state)
    print("inbox", [type(m).__name__ for m in h.inbox])
    h.run()
    print("final", h.core.state, h.core.last_event, h.truth().open_positions().get(SYMBOL))
