"""The offline default persona: one sentence from an occupation, a background, a goal and a style.

PersonaHub (Ge et al. 2024, arXiv:2406.20094) gets its personas from web text; this default needs
no download: it combines the hand-written lists below (about 60 × 30 × 30 × 20 combinations, times
an age), e.g. "A 42-year-old nurse who grew up on a farm, is trying to run a first marathon, and
writes in short, direct sentences." ``persona: {persona: {locale: fr_FR}}`` adds a Faker name and
city. Deliberately not here: model-written personas (``tasks.personas``).
"""

from __future__ import annotations

import random
from typing import Any

OCCUPATIONS = (
    "nurse", "secondary-school maths teacher", "software engineer", "carpenter", "farmer",
    "pharmacist", "bus driver", "graphic designer", "accountant", "chef", "electrician",
    "librarian", "marine biologist", "paramedic", "lawyer", "journalist", "plumber",
    "retired postal worker", "university student in history", "small-business owner",
    "data analyst", "primary-school teacher", "mechanic", "architect", "physiotherapist",
    "musician", "social worker", "beekeeper", "airline pilot", "translator", "veterinarian",
    "warehouse supervisor", "civil engineer", "hairdresser", "museum curator", "firefighter",
    "research chemist", "game developer", "nursery-school assistant", "real-estate agent",
    "truck driver", "dentist", "stay-at-home parent", "park ranger", "barista",
    "hospital administrator", "fashion buyer", "sound engineer", "tax adviser", "baker",
    "sports coach", "photographer", "police officer", "call-centre agent", "PhD student in physics",
    "fisherman", "tailor", "urban planner", "nutritionist", "startup founder",
)  # fmt: skip

BACKGROUNDS = (
    "who grew up on a farm", "who moved to a new country five years ago",
    "who is the first in the family to go to university", "who raised three children alone",
    "who changed careers at forty", "who has lived in the same small town all their life",
    "who served in the army", "who learned to code from online videos",
    "who is dyslexic", "who spent a decade travelling for work", "who grew up in a big city",
    "who speaks three languages", "who recently retired", "who is recovering from an injury",
    "who cares for an elderly parent", "who grew up by the sea", "who left school at sixteen",
    "who studied philosophy before switching fields", "who volunteers at a food bank",
    "who works night shifts", "who has a large extended family", "who lives on a tight budget",
    "who recently became a parent", "who builds furniture as a hobby",
    "who was a competitive swimmer as a teenager", "who lives with a chronic illness",
    "who runs a local book club", "who grew up without the internet at home",
    "who is new to the job", "who has taught evening classes for years",
)  # fmt: skip

GOALS = (
    "wants to save for a house", "is trying to run a first marathon",
    "hopes to start a small business", "wants to understand personal finance better",
    "is preparing for a job interview", "wants to learn to cook healthier meals",
    "hopes to write a novel", "is learning a new language", "wants to help their kids with homework",
    "is planning a long trip abroad", "wants to get promoted this year",
    "is trying to sleep better", "wants to grow their own vegetables",
    "hopes to switch to a greener lifestyle", "is studying for a professional exam",
    "wants to automate boring tasks at work", "is renovating an old house",
    "wants to understand the news on climate science", "is looking for a new hobby",
    "wants to make new friends after moving", "is caring for a new puppy",
    "wants to read more books", "hopes to retire early", "is organising a community event",
    "wants to learn to play the guitar", "is trying to pay off debt",
    "wants to improve their public speaking", "is mentoring a junior colleague",
    "wants to understand how AI tools work", "is planning a wedding",
)  # fmt: skip

STYLES = (
    "writes in short, direct sentences", "asks lots of follow-up questions",
    "is precise and a little formal", "writes casually, with humour",
    "likes step-by-step explanations", "is sceptical and wants evidence",
    "prefers concrete examples to theory", "is enthusiastic and uses exclamation marks",
    "is patient and polite", "gets impatient with long answers",
    "mixes in technical jargon", "writes long, detailed messages", "is blunt",
    "is warm and chatty", "is anxious about getting things wrong", "likes lists and bullet points",
    "uses plain words and avoids jargon", "thinks out loud", "is curious about the why behind things",
    "is practical and wants to know what to do next",
)  # fmt: skip


def describe(rng: random.Random, ages: tuple[int, int], who: dict[str, Any] | None = None) -> str:
    """One persona sentence drawn with ``rng``; ``who`` (``name``, ``city``) adds a name/place."""
    age = rng.randint(*ages)
    job, background = rng.choice(OCCUPATIONS), rng.choice(BACKGROUNDS)
    goal, style = rng.choice(GOALS), rng.choice(STYLES)
    article = "An" if str(age)[0] == "8" or age in (11, 18) else "A"
    head = f"{article} {age}-year-old {job}"
    if who:
        head = f"{who['name']}, a {age}-year-old {job} from {who['city']},"
        return f"{head} {background}, {goal}, and {style}."
    return f"{head} {background}, {goal}, and {style}."
