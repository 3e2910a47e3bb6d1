"""Stop strings (serving/stops.py) with the bundled tokenizer: the check after every token, the cut, and
the streamable prefix that never shows a stop string or a start the next tokens may complete."""

from __future__ import annotations

from directer.serving.stops import StopStrings, stable_text

from bundled_tokenizer import bundled_tokenizer

TEXT = "Autumn leaves fall down.\nGolden light, the END of days."


def test_the_check_fires_at_the_first_token_that_completes_a_stop_string():
    tok = bundled_tokenizer()
    ids = tok.encode(TEXT)
    stops = StopStrings(tok, ["END of"])
    fired = [k for k in range(1, len(ids) + 1) if stops(ids[:k])]
    first = fired[0]
    assert "END of" in tok.decode(ids[:first]) and "END of" not in tok.decode(ids[:first - 1])
    assert StopStrings(tok, ["nowhere"])(ids) is False and StopStrings(tok, [])(ids) is False


def test_cut_before_the_earliest_stop_string():
    stops = StopStrings(bundled_tokenizer(), ["light", "\n"])
    assert stops.cut(TEXT) == ("Autumn leaves fall down.", True)
    assert stops.cut("no stop here") == ("no stop here", False)


def test_streaming_holds_back_what_may_become_a_stop_string():
    stops = StopStrings(bundled_tokenizer(), ["END of"])
    assert stops.safe("the EN") == "the "  # "EN" may become "END of"
    assert stops.safe("the END o") == "the "
    assert stops.safe("the END of days") == "the "  # cut
    assert stops.safe("the ENDS") == "the ENDS"  # no longer a start
    streamed = ""
    for k in range(1, len(TEXT) + 1):  # every prefix, as chunks arrive
        safe = stops.safe(TEXT[:k])
        assert safe.startswith(streamed)  # what was sent never changes
        streamed = safe
    assert streamed == stops.cut(TEXT)[0]


def test_stable_text_drops_a_half_character():
    assert stable_text("caf\ufffd") == "caf" and stable_text("café") == "café"
