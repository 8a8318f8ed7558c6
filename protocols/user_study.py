"""The user study's rows (protocol ``user_study``): how reports show them and the metrics they hold.

The study itself, its page and its statistics, is :mod:`kpbench.study` (``kpbench study make`` /
``analyze``); this file only declares what those rows are.
"""

from kpbench.metricinfo import register_metric
from kpbench.protocol import Protocol, register_protocol
from kpbench.study import PROTOCOL

# The study's rows are written by ``kpbench study analyze``, not by ``kpbench eval``: the
# protocol only tells reports how to show them.
register_protocol(Protocol(
    name=PROTOCOL,
    description="Blind pairwise judgments of generated (and real) images by participants.",
    run=None,
    order=70,
    heading="User study",
    report_description=
    "The user study (kpbench study make / analyze): participants chose the more realistic of "
    "two images made from the same patches, blind to the models. Preference: the share of "
    "judgments a model won against another, with a Wilson interval (the note gives the "
    "two-sided binomial p-value against 0.5); realism: the share it won against the real image; "
    "bt_score: its Bradley-Terry log strength over all pairs with a participant-bootstrap "
    "interval; patch_recognition: how often participants told correctly whether an image "
    "contains given patches; agreement: participants' pairwise agreement per question (chance "
    "0.5). The Wilson intervals and binomial tests count every judgment as independent; when "
    "few participants judge the same pairs they are too narrow, so read them next to the "
    "participant-bootstrap Bradley-Terry intervals. A second study of the same runs replaces "
    "the first one's rows (the note names the study).",
))
register_metric("preference", "preference", "higher", order=100, bounds=(0.0, 1.0))
register_metric("preference_p_value", "binomial p (preference)", None, order=110)
register_metric("realism", "realism vs real", "higher", order=120)
register_metric("realism_p_value", "binomial p (realism)", None, order=130)
register_metric("bt_score", "Bradley-Terry score", "higher", order=140)
register_metric("patch_recognition", "patch recognition", "higher", order=150)
register_metric("agreement", "agreement", None, order=160)  # between participants: no direction
