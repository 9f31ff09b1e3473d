#!/usr/bin/env python3
"""Writes data/train_prompts.jsonl: the prompt set msn_finetune self-distils for MSN training.

Built here, deterministically (random.Random(0)), from the lists below: eight kinds of request
(explanations, how-to tips, short creative writing, Python functions, arithmetic word problems,
rewriting and translating sentences, comparisons, lists), each a template filled from topic lists
written for this project. No prompt shares an 8-word run with a Spec-Bench question or a
HumanEval problem (checked against data/spec_bench/question.jsonl and data/humaneval/HumanEval.jsonl
when they are present; the script fails otherwise).

    python3 tools/make_train_prompts.py            # writes data/train_prompts.jsonl
"""
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
rng = random.Random(0)

CONCEPTS = """photosynthesis; gravity; inflation; compound interest; the immune system; tides;
vaccines; black holes; recycling; supply and demand; the internet; electricity; magnets;
rainbows; earthquakes; the stock market; climate; sleep; memory; muscles growing stronger;
how airplanes fly; how a refrigerator works; how batteries store energy; why the sky is blue;
how plants drink water; how a bill becomes a law; what a budget is; how credit scores work;
how search engines find pages; what an algorithm is; what a database is; encryption;
how maps are made; why leaves change color; how a compass works; the moon's phases;
how bridges stay up; what DNA is; how soap cleans; why bread rises; how sound travels;
what a virus is; how glaciers move; why we have seasons; how a camera works; what a
thermostat does; how money is printed; why cats purr; how birds migrate; what a calorie is;
how elections are counted; what renewable energy is; how a lock and key work; what friction is;
why ice floats; how wind forms; what a spreadsheet is; how email reaches its reader;
what a time zone is; how coffee is made""".replace("\n", " ").split("; ")

AUDIENCES = ["in simple terms", "to a ten-year-old", "in three sentences",
             "to someone who has never heard of it", "with an everyday example"]

ACTIVITIES = """studying for an exam; running a first 5k; cooking for a large family; keeping a tidy
desk; starting a vegetable garden; learning to play guitar; traveling on a small budget;
writing a clear email; speaking in public; staying focused while working from home; packing
for a weekend trip; training a young dog; saving for a holiday; making new friends at work;
keeping a journal; reading more books; drinking less coffee; sleeping better; organizing a
birthday party; fixing a flat bicycle tire; choosing a laptop; preparing for a job interview;
learning to swim as an adult; keeping houseplants healthy in winter; reducing food waste;
teaching a child to ride a bike; taking better photos with a phone; staying safe on a hike;
making a long flight comfortable; painting a room; writing a short speech for a wedding;
keeping a small apartment cool in summer; moving to a new city; managing a group project;
learning to type faster; shopping for groceries on a budget; practicing a new language every
day; starting to meditate; keeping a car in good shape; planning a picnic""".replace("\n", " ").split("; ")

FORMS = ["a haiku", "a four-line poem", "a short story in five sentences", "a limerick",
         "a diary entry of a few lines", "a short fable with a moral", "a friendly letter"]

SUBJECTS = """a lighthouse keeper; a lost umbrella; the first snow of winter; a robot learning to
cook; a cat who wants to fly; an old bicycle; a rainy Monday; a library at night; a brave
little boat; a forgotten garden; a dragon who is afraid of the dark; the last day of summer;
a busy train station; a kite on a windy day; a grandmother's recipe; a clock that runs
backwards; a penguin in the desert; a city at dawn; a squirrel preparing for winter; a
message in a bottle; a new pair of shoes; a tree that remembers; a street musician; a
sleepy owl; a village bakery; a shooting star; a lost key; an astronaut's first morning in
space; a quiet lake; a paper airplane""".replace("\n", " ").split("; ")

FUNCTIONS = """counts the vowels in a string; reverses the words of a sentence; returns the
largest of three numbers; checks whether a year is a leap year; converts Celsius to
Fahrenheit; returns the factorial of n using a loop; removes duplicate items from a list while
keeping their order; counts how often each word appears in a text; checks whether a string
reads the same backwards; returns the n-th Fibonacci number; merges two sorted lists into one
sorted list; returns the average of a list of numbers, or None for an empty list; capitalizes
the first letter of every word; returns the second smallest number in a list; flattens a list
of lists; checks whether two words are anagrams; converts a number of seconds into hours,
minutes and seconds; returns the sum of the digits of an integer; finds the longest word in a
sentence; rotates a list by k positions; returns all even numbers from a list; checks whether
a number is prime; converts a binary string to an integer; counts the lines in a text file;
returns the greatest common divisor of two numbers; groups a list of words by their first
letter; returns the running total of a list; replaces every space in a string with an
underscore; returns the index of the first negative number, or -1; checks whether a list is
sorted; computes the area of a circle from its radius; returns a dictionary mapping each
character to its count; removes punctuation from a string; returns the middle element of a
list; splits a list into chunks of size n; checks whether all brackets in a string are
balanced; returns the product of a list of numbers; converts a list of strings to upper case;
finds the most common element in a list; returns the number of days between two dates given
as strings""".replace("\n", " ").split("; ")

NAMES = ["alice", "bo", "carmen", "dev", "emma", "farid", "grace", "hiro", "ines", "jonas",
         "kemi", "luca", "maya", "nils", "omar", "priya", "quinn", "rosa", "sami", "tess"]
ITEMS = ["apples", "notebooks", "pencils", "cupcakes", "stickers", "marbles", "tickets",
         "bottles of water", "plant pots", "bus passes"]

def word_problem():
    a, b, c = rng.randint(2, 40), rng.randint(2, 15), rng.randint(2, 9)
    n1, n2 = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    kinds = [
        f"{n1.title()} has {a} {item} and buys {b} more, then gives {c} to {n2.title()}. How many {item} does {n1.title()} have now? Explain your steps.",
        f"A shop sells {item} at {b} dollars each. How much do {a} of them cost?",
        f"{n1.title()} reads {b} pages a day. How many days does a {a * b}-page book take? Show the calculation.",
        f"A train travels at {a + 40} km per hour for {c} hours. How far does it go?",
        f"{a * c} {item} are shared equally among {c} friends. How many does each friend get?",
        f"A rectangle is {a} cm long and {b} cm wide. What are its area and perimeter?",
        f"{n1.title()} saves {b} dollars every week. How many weeks until {n1.title()} has {b * a} dollars?",
        f"What is {a}% of {b * 20}? Explain how you got it.",
    ]
    return rng.choice(kinds)

PEOPLE = ["my neighbour", "the teacher", "our team", "the manager", "my brother", "the doctor",
          "a tourist", "the old fisherman", "the children", "my friend"]
ACTIONS = ["forgot the meeting", "fixed the broken gate", "planted tomatoes in the garden",
           "missed the last bus", "baked a cake for the party", "found a wallet on the street",
           "painted the fence blue", "finished the report early", "lost the map",
           "cooked dinner for everyone"]
WHEN = ["yesterday", "this morning", "last week", "on Sunday", "after lunch"]

def sentence():
    return f"{rng.choice(PEOPLE).capitalize()} {rng.choice(ACTIONS)} {rng.choice(WHEN)}."

REWRITES = ["Rewrite this sentence so it sounds more formal: {}",
            "Rewrite this sentence in the future tense: {}",
            "Translate into Spanish: {}", "Translate into German: {}",
            "Turn this sentence into a question: {}",
            "Summarize in one sentence: {} {} {}"]

PAIRS = """weather and climate; a virus and a bacterium; a list and a tuple in Python; speed and
velocity; a lake and a pond; a crocodile and an alligator; saving and investing; a simile and a
metaphor; a star and a planet; an ocean and a sea; a frog and a toad; RAM and storage; a
hurricane and a tornado; baking soda and baking powder; a noun and a verb; a democracy and a
monarchy; an herbivore and a carnivore; a violin and a viola; a mountain and a hill; a
hypothesis and a theory; a loan and a grant; a map and a globe; a museum and a gallery;
jam and jelly; a bus and a tram; a debit card and a credit card; an email and a letter;
a lawyer and a judge; a comet and an asteroid; tea and coffee""".replace("\n", " ").split("; ")

LISTS = """fruits that are red; countries in South America; musical instruments with strings;
animals that live in the ocean; things to pack for the beach; vegetables that grow
underground; board games for families; ways to say thank you; planets in the solar system;
jobs in a hospital; sports played with a ball; kitchen tools; birds that cannot fly; colors of
the rainbow; famous rivers; things that are made of glass; healthy breakfast ideas; rainy day
activities for children; tools a carpenter uses; words that rhyme with light""".replace("\n", " ").split("; ")

def prompts():
    out = []
    for c in CONCEPTS:
        for a in rng.sample(AUDIENCES, 3):
            out.append(f"Explain {c} {a}.")
    for a in ACTIVITIES:
        for n in rng.sample(["three", "four", "five"], 2):
            out.append(f"Give me {n} practical tips for {a}.")
        out.append(f"What are common mistakes people make when {a}?")
    for s in SUBJECTS:
        for f in rng.sample(FORMS, 4):
            out.append(f"Write {f} about {s}.")
    for i, f in enumerate(FUNCTIONS):
        out.append(f"Write a Python function that {f}.")
        out.append(f"Write a Python function that {f}. Add a short docstring and one example call.")
    out += [word_problem() for _ in range(260)]
    for _ in range(260):
        t = rng.choice(REWRITES)
        out.append(t.format(*(sentence() for _ in range(t.count("{}")))))
    for p in PAIRS:
        a, b = p.split(" and ", 1)
        out.append(f"What is the difference between {a} and {b}?")
        out.append(f"Compare {a} and {b} in a short table.")
    for l in LISTS:
        for n in rng.sample(["three", "five", "seven"], 2):
            out.append(f"List {n} {l}.")
    seen, unique = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    rng.shuffle(unique)
    return unique

def shingles(text, n=8):
    w = re.findall(r"[a-z0-9]+", text.lower())
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}

def held_out_shingles():
    sb, he = ROOT / "data/spec_bench/question.jsonl", ROOT / "data/humaneval/HumanEval.jsonl"
    if not (sb.exists() and he.exists()):
        sys.exit(f"need {sb} and {he} to check the prompts are disjoint from them")
    s = set()
    for line in sb.read_text().splitlines():
        for t in json.loads(line)["turns"]:
            s |= shingles(t)
    for line in he.read_text().splitlines():
        s |= shingles(json.loads(line)["prompt"])
    return s

def main():
    ps = prompts()
    bad = held_out_shingles()
    clash = [p for p in ps if shingles(p) & bad]
    if clash:
        sys.exit(f"{len(clash)} prompts share an 8-word run with Spec-Bench/HumanEval: {clash[:3]}")
    path = ROOT / "data/train_prompts.jsonl"
    with open(path, "w") as f:
        for i, p in enumerate(ps):
            f.write(json.dumps({"id": i, "prompt": p}) + "\n")
    print(f"wrote {len(ps)} prompts to {path}")

if __name__ == "__main__":
    main()
