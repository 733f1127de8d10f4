"""The rules of a consultation room (signaling/rooms.py), and quality bands."""

from __future__ import annotations

import pytest

from sfu.monitor import quality_band
from signaling.rooms import Participant, Room, RoomError, RoomOptions, Track


def room_with(*people: tuple[str, str], **options) -> Room:
    room = Room(name="r", options=RoomOptions(**options))
    for identity, role in people:
        room.participants[identity] = Participant(
            identity=identity, name=identity, role=role, joined_at=0.0
        )
    return room


def code_of(call) -> str:
    with pytest.raises(RoomError) as error:
        call()
    return error.value.code


def test_limits_count_publishers_and_viewers_apart():
    room = room_with(
        ("lead", "lead"), ("p1", "participant"), ("o1", "observer"), max_publishers=2, max_viewers=1
    )
    assert code_of(lambda: room.check_admit("p2", "participant")) == "room_full"
    assert code_of(lambda: room.check_admit("o2", "observer")) == "room_full"
    room.check_admit("p1", "participant")  # a rejoin is always admitted
    room.ended = True
    assert code_of(lambda: room.check_admit("p1", "participant")) == "room_ended"


def test_only_the_lead_changes_roles_and_never_its_own():
    room = room_with(("lead", "lead"), ("p", "participant"), ("o", "observer"), max_publishers=3)
    lead, p, o = (room.participants[i] for i in ("lead", "p", "o"))
    assert code_of(lambda: room.check_role_change(p, o, "participant")) == "forbidden"
    assert code_of(lambda: room.check_role_change(lead, lead, "observer")) == "forbidden"
    assert code_of(lambda: room.check_role_change(lead, o, "lead")) == "invalid"
    room.check_role_change(lead, o, "participant")
    room.check_role_change(None, o, "participant")  # the server API may
    full = room_with(("lead", "lead"), ("o", "observer"), max_publishers=1)
    assert (
        code_of(
            lambda: full.check_role_change(
                full.participants["lead"], full.participants["o"], "participant"
            )
        )
        == "room_full"
    )


def test_track_control_is_the_owners_or_the_leads():
    room = room_with(("lead", "lead"), ("p", "participant"), ("q", "participant"))
    track = Track(id="t", owner="p", kind="audio", source="microphone", mid="0", producer_id="t")
    room.tracks["t"] = track
    room.check_track_control(room.participants["p"], track)
    room.check_track_control(room.participants["lead"], track)
    assert code_of(lambda: room.check_track_control(room.participants["q"], track)) == "forbidden"
    assert code_of(lambda: room.track("nope")) == "not_found"
    assert (
        code_of(lambda: room.check_moderator(room.participants["q"], "end the room")) == "forbidden"
    )


def test_summary_counts_by_role():
    room = room_with(("lead", "lead"), ("p", "participant"), ("o1", "observer"), ("o2", "observer"))
    summary = room.summary()
    assert summary["participants"] == 4 and summary["by_role"] == {
        "lead": 1,
        "participant": 1,
        "observer": 2,
    }


@pytest.mark.parametrize(
    ("loss", "rtt", "band"),
    [
        (0.0, None, "excellent"),
        (0.01, 0.1, "excellent"),
        (0.03, 0.1, "good"),
        (0.0, 0.4, "good"),
        (0.1, 0.1, "poor"),
        (0.0, 0.9, "poor"),
    ],
)
def test_quality_bands(loss, rtt, band):
    assert quality_band(loss, rtt) == band
