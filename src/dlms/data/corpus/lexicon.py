"""Words of the built-in corpus, grouped by grammatical category and by label.

Every content word appears in exactly one list of this module (checked by
:func:`check_lexicon`).  That uniqueness is what makes the labels of a text
recoverable from its words alone: a topic word belongs to one topic, a
sentiment word to one sentiment, and neutral words to neither.

Conventions: all words are lowercase ASCII letters, no hyphens or apostrophes.
The indefinite article is chosen orthographically ("an" before a vowel letter),
so words whose pronunciation breaks that rule ("hour", "unique", ...) are kept
out of the lexicon.
"""

from __future__ import annotations

TOPICS = ("food", "sports", "travel", "technology", "music")
SENTIMENTS = ("negative", "positive")


def _split(s: str) -> list[str]:
    return s.split()


def plural(noun: str) -> str:
    """Regular English plural; the lexicon only holds nouns this rule gets right."""
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _verbs(s: str) -> list[tuple[str, str, str]]:
    """Parse "base,3sg,past; ..." into (base, third-person singular, past) triples."""
    return [tuple(v.split(",")) for v in s.split(";")]  # type: ignore[misc]


def _by_sentiment(positive: str, negative: str, parse=_split) -> dict[str, list]:
    """A sentiment table: {"positive": parse(positive), "negative": parse(negative)}."""
    return {"positive": parse(positive), "negative": parse(negative)}


# --- neutral words (no label) ----------------------------------------------

# descriptive modifiers that carry neither sentiment nor topic
MODIFIERS = _split("new old big small local famous latest first modern recent huge tiny little second classic special")
# degree adverbs before an adjective
INTENSIFIERS = _split("very really truly quite extremely incredibly so rather")
# people who can be subjects: (singular, plural) come from plural()
FAMILY = _split(
    "friend sister brother cousin colleague neighbor roommate boss mom dad son daughter uncle aunt partner teacher"
)
PRONOUNS_BASE = _split("i we they you")  # take the base verb form in the present
PRONOUNS_S3 = _split("he she")  # take the -s form in the present
TIME_SINGLE = _split("yesterday today recently")
TIME_AFTER_LAST = _split("week night month year weekend summer winter friday saturday sunday")
TIME_AFTER_THIS = _split("morning afternoon evening")

# --- sentiment words, shared by all topics ----------------------------------

GENERAL_ADJ = _by_sentiment(
    "great wonderful excellent amazing fantastic brilliant superb impressive outstanding terrific "
    "lovely marvelous splendid remarkable fabulous",
    "terrible awful horrible dreadful disappointing mediocre poor bad lousy annoying "
    "unpleasant pathetic hopeless miserable atrocious",
)
PERSON_ADJ = _by_sentiment(
    "friendly kind helpful polite talented skilled cheerful generous patient attentive passionate charming",
    "rude lazy arrogant careless grumpy incompetent impatient unfriendly clueless dismissive unprofessional sloppy",
)
MANNER_ADV = _by_sentiment(
    "perfectly beautifully brilliantly wonderfully superbly expertly skillfully gracefully flawlessly nicely",
    "badly poorly terribly awfully horribly clumsily sloppily carelessly lazily miserably",
)
# verbs of liking / disliking
LIKE_VERBS = _by_sentiment(
    "love,loves,loved;like,likes,liked;enjoy,enjoys,enjoyed;adore,adores,adored;"
    "appreciate,appreciates,appreciated;admire,admires,admired",
    "hate,hates,hated;dislike,dislikes,disliked;loathe,loathes,loathed;"
    "despise,despises,despised;detest,detests,detested;resent,resents,resented",
    parse=_verbs,
)
# stance adverbs in "i would ___ recommend" / "i will ___ come back"
STANCE_ADV = _by_sentiment(
    "definitely certainly gladly happily surely",
    "never not",
)

# --- topic words -------------------------------------------------------------

# countable things of the domain (singular; plurals via plural())
THINGS = {
    "food": _split(
        "burger salad pizza sandwich soup steak taco curry cake pie omelette dessert pancake dumpling pastry muffin"
    ),
    "sports": _split(
        "match game race tournament championship season derby marathon playoff competition fixture bout contest "
        "workout rally semifinal"
    ),
    "travel": _split(
        "trip flight cruise journey vacation holiday voyage excursion getaway train ferry safari expedition "
        "tour hike layover"
    ),
    "technology": _split(
        "phone laptop tablet camera app printer keyboard monitor router smartwatch charger console drone computer "
        "gadget headset"
    ),
    "music": _split(
        "song album concert melody tune ballad symphony gig playlist track opera musical recital solo duet chorus"
    ),
}
# people of the domain
AGENTS = {
    "food": _split("chef waiter waitress baker bartender"),
    "sports": _split("player striker coach referee goalkeeper athlete"),
    "travel": _split("guide pilot driver captain attendant receptionist"),
    "technology": _split("engineer developer programmer technician designer"),
    "music": _split("singer drummer guitarist pianist violinist conductor"),
}
# venues of the domain (used in the singular only)
PLACES = {
    "food": _split("restaurant cafe diner bistro bakery cafeteria pizzeria"),
    "sports": _split("stadium arena gym ballpark racetrack velodrome"),
    "travel": _split("airport hotel station resort harbor terminal hostel"),
    "technology": _split("office lab workshop showroom startup factory"),
    "music": _split("club theater studio festival auditorium ballroom amphitheater"),
}
# what the domain's people do to the domain's things: (base, 3sg, past)
ACTION_VERBS = {
    "food": _verbs("cook,cooks,cooked;serve,serves,served;bake,bakes,baked;prepare,prepares,prepared;grill,grills,grilled"),
    "sports": _verbs(
        "play,plays,played;manage,manages,managed;handle,handles,handled;control,controls,controlled;"
        "finish,finishes,finished"
    ),
    "travel": _verbs(
        "lead,leads,led;organize,organizes,organized;arrange,arranges,arranged;operate,operates,operated;"
        "schedule,schedules,scheduled"
    ),
    "technology": _verbs(
        "design,designs,designed;build,builds,built;fix,fixes,fixed;repair,repairs,repaired;"
        "upgrade,upgrades,upgraded"
    ),
    "music": _verbs(
        "perform,performs,performed;sing,sings,sang;write,writes,wrote;compose,composes,composed;"
        "conduct,conducts,conducted"
    ),
}
# what anyone did with the domain's things (past tense only)
EXPERIENCE_VERBS = {
    "food": _split("ate ordered tried tasted"),
    "sports": _split("watched attended followed joined"),
    "travel": _split("took booked planned chose"),
    "technology": _split("bought used installed tested"),
    "music": _split("heard recorded discovered caught"),
}
# adjectives that only make sense in one domain, per sentiment
TOPIC_ADJ = {
    "food": _by_sentiment(
        "delicious tasty fresh juicy flavorful savory crispy tender",
        "bland stale greasy soggy burnt overcooked tasteless salty",
    ),
    "sports": _by_sentiment(
        "thrilling exciting intense competitive dramatic spectacular gripping fierce",
        "predictable sluggish lifeless uneventful lopsided tiresome pointless scrappy",
    ),
    "travel": _by_sentiment(
        "relaxing scenic comfortable peaceful smooth memorable breathtaking cozy",
        "exhausting crowded delayed uncomfortable bumpy chaotic cramped noisy",
    ),
    "technology": _by_sentiment(
        "fast reliable intuitive sleek powerful responsive efficient innovative",
        "slow buggy glitchy unreliable clunky outdated overpriced fragile",
    ),
    "music": _by_sentiment(
        "catchy melodic soulful uplifting harmonious moving groovy lyrical",
        "repetitive monotonous tuneless shrill discordant forgettable grating pretentious",
    ),
}

# Function words that the grammar writes literally (kept here so that
# check_lexicon can make sure no content word collides with one of them).
FUNCTION_WORDS = _split(
    "the a an at because it they my is was are were would recommend to will come go back return "
    "every minute of anyone everyone last this i we you he she ."
)

# Words whose a/an is not decided by their first letter; none may be used.
ARTICLE_EXCEPTIONS = frozenset(
    _split("hour hours honest honor heir one once unique unit useful usual user university unicorn uniform euro")
)


def content_lists() -> list[tuple[str, list[str]]]:
    """Every content-word list as (description, words), plural and verb forms expanded."""
    out: list[tuple[str, list[str]]] = [
        ("modifiers", MODIFIERS),
        ("intensifiers", INTENSIFIERS),
        ("family", FAMILY + [plural(w) for w in FAMILY]),
        ("time", TIME_SINGLE + TIME_AFTER_LAST + TIME_AFTER_THIS),
    ]
    for s in SENTIMENTS:
        out += [
            (f"general adj {s}", GENERAL_ADJ[s]),
            (f"person adj {s}", PERSON_ADJ[s]),
            (f"manner adv {s}", MANNER_ADV[s]),
            (f"like verbs {s}", [f for v in LIKE_VERBS[s] for f in v]),
            (f"stance adv {s}", STANCE_ADV[s]),
        ]
    for t in TOPICS:
        out += [
            (f"things {t}", THINGS[t] + [plural(w) for w in THINGS[t]]),
            (f"agents {t}", AGENTS[t] + [plural(w) for w in AGENTS[t]]),
            (f"places {t}", PLACES[t]),
            (f"action verbs {t}", [f for v in ACTION_VERBS[t] for f in v]),
            (f"experience verbs {t}", EXPERIENCE_VERBS[t]),
        ]
        for s in SENTIMENTS:
            out.append((f"topic adj {t} {s}", TOPIC_ADJ[t][s]))
    return out


def check_lexicon() -> None:
    """Raise ValueError if a word is malformed, repeated, or breaks the a/an rule.

    The label-recovery argument of the checker (and the disjointness used by
    the sentence-count bound) rests on these properties, so they are checked
    rather than assumed.
    """
    seen: dict[str, str] = {w: "function words" for w in FUNCTION_WORDS}
    if len(seen) != len(FUNCTION_WORDS):
        raise ValueError("repeated function word")
    for name, words in content_lists():
        for w in words:
            if not (w.isascii() and w.isalpha() and w.islower()):
                raise ValueError(f"malformed word {w!r} in {name}")
            if w in ARTICLE_EXCEPTIONS:
                raise ValueError(f"{w!r} in {name} breaks the orthographic a/an rule")
            if w in seen:
                raise ValueError(f"{w!r} is in both {seen[w]} and {name}")
            seen[w] = name
    for v in [v for d in (LIKE_VERBS, ACTION_VERBS) for vs in d.values() for v in vs]:
        if len(v) != 3:
            raise ValueError(f"verb entry {v!r} is not (base, 3sg, past)")
