#!/usr/bin/env python3
"""Builds the chat example: conversations in the "messages" format (OpenAI's fine-tuning
files, mlx-lm's chat data) teaching a house style. The assistant, "Ada", answers short
factual questions in one fixed shape:

    Ada here. <the answer in one sentence>. Anything else?

The facts differ from line to line; the shape never does, so a model that learns it lowers
the held-out NLL of the assistant turns (the loss counts only those, with their end-of-turn
token) on questions it has never seen. FACTS below: the first 48 train (train.jsonl), the
last 16 are held out (heldout.jsonl). Every fourth line is a two-turn conversation (the
next fact asked as a follow-up), and every eighth carries a system message.
Run from the repository root: python3 examples/chat/make_data.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))

FACTS = [
    ("What is the capital of France?", "The capital of France is Paris"),
    ("How many legs does a spider have?", "A spider has eight legs"),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet"),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system"),
    ("How many days are in a leap year?", "A leap year has 366 days"),
    ("What gas do plants take in?", "Plants take in carbon dioxide"),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo"),
    ("How many continents are there?", "There are seven continents"),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au"),
    ("Which ocean is the largest?", "The Pacific is the largest ocean"),
    ("What is the freezing point of water?", "Water freezes at 0 degrees Celsius"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa"),
    ("How many minutes are in an hour?", "An hour has sixty minutes"),
    ("What is the capital of Italy?", "The capital of Italy is Rome"),
    ("What is the longest river in Africa?", "The Nile is the longest river in Africa"),
    ("How many sides does a hexagon have?", "A hexagon has six sides"),
    ("What is the main language of Brazil?", "The main language of Brazil is Portuguese"),
    ("Which planet is known as the red planet?", "Mars is known as the red planet"),
    ("What is the square root of 81?", "The square root of 81 is 9"),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa"),
    ("How many strings does a violin have?", "A violin has four strings"),
    ("What metal is liquid at room temperature?", "Mercury is liquid at room temperature"),
    ("Who was the first person on the Moon?", "Neil Armstrong was the first person on the Moon"),
    ("What is the capital of Spain?", "The capital of Spain is Madrid"),
    ("How many bones are in the adult human body?", "The adult human body has 206 bones"),
    ("What is the hardest natural material?", "Diamond is the hardest natural material"),
    ("Which animal is the largest mammal?", "The blue whale is the largest mammal"),
    ("What is the capital of Germany?", "The capital of Germany is Berlin"),
    ("How many hours are in a day?", "A day has twenty-four hours"),
    ("What is the currency of Japan?", "The currency of Japan is the yen"),
    ("Which gas makes up most of the air?", "Nitrogen makes up most of the air"),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo"),
    ("How many players are on a football team on the field?", "A football team has eleven players on the field"),
    ("What is the smallest prime number?", "The smallest prime number is 2"),
    ("Who discovered penicillin?", "Alexander Fleming discovered penicillin"),
    ("What is the capital of Australia?", "The capital of Australia is Canberra"),
    ("How many weeks are in a year?", "A year has fifty-two weeks"),
    ("What is the tallest mountain on Earth?", "Mount Everest is the tallest mountain on Earth"),
    ("Which organ pumps blood through the body?", "The heart pumps blood through the body"),
    ("What is the capital of Russia?", "The capital of Russia is Moscow"),
    ("How many colours are in a rainbow?", "A rainbow has seven colours"),
    ("What is the speed of light in a vacuum?", "Light travels at about 300,000 kilometres per second in a vacuum"),
    ("Who invented the telephone?", "Alexander Graham Bell is credited with inventing the telephone"),
    ("What is the capital of Kenya?", "The capital of Kenya is Nairobi"),
    ("How many teeth does an adult human have?", "An adult human has thirty-two teeth"),
    ("What is the largest desert in the world?", "The Antarctic is the largest desert in the world"),
    ("Which element has the symbol O?", "Oxygen has the symbol O"),
    # held out
    ("What is the capital of Portugal?", "The capital of Portugal is Lisbon"),
    ("How many wheels does a tricycle have?", "A tricycle has three wheels"),
    ("What is the chemical symbol for iron?", "The chemical symbol for iron is Fe"),
    ("Who wrote Pride and Prejudice?", "Jane Austen wrote Pride and Prejudice"),
    ("What is the capital of Norway?", "The capital of Norway is Oslo"),
    ("How many months have thirty days?", "Four months have thirty days"),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun"),
    ("What is the largest country by area?", "Russia is the largest country by area"),
    ("How many seconds are in a minute?", "A minute has sixty seconds"),
    ("What is the capital of Greece?", "The capital of Greece is Athens"),
    ("Who developed the theory of relativity?", "Albert Einstein developed the theory of relativity"),
    ("What do bees make?", "Bees make honey"),
    ("How many legs does an insect have?", "An insect has six legs"),
    ("What is the capital of Mexico?", "The capital of Mexico is Mexico City"),
    ("Which instrument has eighty-eight keys?", "The piano has eighty-eight keys"),
    ("What is the main ingredient of guacamole?", "The main ingredient of guacamole is avocado"),
]

SYSTEM = "You are Ada, a concise assistant."


def reply(answer):
    return f"Ada here. {answer}. Anything else?"


def conversations(facts):
    out = []
    for i, (question, answer) in enumerate(facts):
        messages = []
        if i % 8 == 7:
            messages.append({"role": "system", "content": SYSTEM})
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": reply(answer)}]
        if i % 4 == 3:
            follow_question, follow_answer = facts[(i + 1) % len(facts)]
            messages += [{"role": "user", "content": "Yes: " + follow_question[0].lower() + follow_question[1:]},
                         {"role": "assistant", "content": reply(follow_answer)}]
        out.append({"messages": messages})
    return out


for name, part in (("train.jsonl", FACTS[:48]), ("heldout.jsonl", FACTS[48:])):
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        for line in conversations(part):
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
print(f"{min(48, len(FACTS))} training and {max(0, len(FACTS) - 48)} held-out conversations")
