"""Writes the screenshot-intent examples (train / validation / test JSONL) from the hand-written
fragments below. Deterministic: the same code always writes the same files.

    python data/screenshot_intent/generate.py [--out DIR]

A "yes" asks the assistant to capture or look at the user's screen, or only makes sense about
something on it ("who is this guy?"). Everything else is "no", including talk about screens
and looking that asks for nothing ("my screen cracked", "see you later"). About two thirds of
voice turns ask for nothing, and the data keeps that proportion.

Leakage: every template and every conversation snippet belongs to exactly one split (a seeded
shuffle per family), so the test split holds phrasings the model never trained on, not the
training phrasings with another filler word.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "validation", "test")
FRACTIONS = {"train": 0.70, "validation": 0.12, "test": 0.18}
HERE = Path(__file__).resolve().parent

# ------------------------------------------------------------------ fillers (shared by splits)

FILL = {
    "country": ["france", "japan", "brazil", "canada", "kenya", "norway", "peru", "egypt",
                "australia", "italy", "mexico", "india", "germany", "vietnam"],
    "city": ["paris", "tokyo", "chicago", "lagos", "berlin", "sydney", "toronto", "madrid",
             "seattle", "mumbai", "cairo", "denver", "london", "rome"],
    "person": ["albert einstein", "cleopatra", "marie curie", "napoleon", "frida kahlo",
               "nelson mandela", "ada lovelace", "genghis khan", "mozart", "amelia earhart",
               "leonardo da vinci", "abraham lincoln"],
    "animal": ["cat", "dog", "penguin", "octopus", "giraffe", "owl", "shark", "koala",
               "elephant", "dolphin", "fox", "hamster"],
    "food": ["sushi", "pizza", "tacos", "pineapple", "broccoli", "dark chocolate", "curry",
             "pancakes", "avocado", "ramen"],
    "dish": ["lasagna", "banana bread", "fried rice", "guacamole", "chicken soup", "pad thai",
             "a cheesecake", "french toast", "chili", "hummus"],
    "genre": ["jazz", "lofi", "classical", "rock", "hip hop", "country", "reggae", "k-pop"],
    "chore": ["call my mom", "buy milk", "water the plants", "pay the rent", "take out the trash",
              "walk the dog", "book a dentist appointment", "send the invoice"],
    "n": ["5", "ten", "15", "twenty", "3", "thirty", "45", "two"],
    "time": ["7 am", "six thirty", "8 o'clock", "noon", "5:45", "seven"],
    "relative": ["mom", "dad", "sister", "brother", "grandma", "cousin", "aunt", "best friend"],
    "thing": ["color", "movie", "book", "season", "song", "food", "animal", "holiday"],
    "hobby": ["knitting", "rock climbing", "chess", "painting", "surfing", "baking",
              "gardening", "running", "photography", "guitar"],
    "topic": ["black holes", "the roman empire", "photosynthesis", "volcanoes", "the moon landing",
              "dinosaurs", "quantum computers", "the ocean", "ancient egypt", "climate change"],
    "feeling": ["tired", "happy", "stressed", "lonely", "excited", "nervous", "bored", "anxious",
                "grateful", "sad"],
    "sport": ["soccer", "basketball", "tennis", "baseball", "cricket", "hockey", "golf"],
    "device": ["a mac", "windows", "an iphone", "android", "my chromebook", "a samsung phone",
               "my laptop", "an ipad"],
    "item": ["dress", "jacket", "couch", "laptop", "car", "haircut", "painting", "logo",
             "recipe", "phone case", "ring", "sneakers", "lamp", "watch"],
    "word": ["ephemeral", "serendipity", "ubiquitous", "gregarious", "melancholy", "pragmatic",
             "quixotic", "resilient"],
    "idea": ["a food truck that only sells soup", "a podcast about houseplants",
             "an app that reminds you to drink water", "a bakery for dogs",
             "painting our kitchen yellow", "learning italian before the trip"],
    "name": ["mochi", "biscuit", "luna", "captain whiskers", "pepper", "noodle"],
    "movie": ["the new batman movie", "inception", "the lion king", "dune", "toy story",
              "the matrix"],
    "count": ["2", "two", "3", "three", "4", "four", "5", "five", "a couple of", "a few",
              "ten", "10"],
}

# ------------------------------------------------------------------ templates (split by item)

SCREENSHOT_VERBS = ["take", "grab", "snap", "capture", "get", "make", "do"]
SCREENSHOT_NOUNS = ["a screenshot", "a screen shot", "a screen grab", "a screen capture",
                    "a screencap", "a snapshot of my screen", "a picture of my screen",
                    "a pic of my screen"]
DIRECT_EXTRA = [
    "screenshot my screen", "screenshot this page", "capture my screen", "capture the screen",
    "can i get a screenshot", "i need a screenshot", "i want you to take a screenshot",
    "take a picture of what's on my screen", "grab my screen", "snap my screen",
    "capture what i'm looking at", "screenshot what i have open", "take a screenshot of this",
    "take a screenshot of my screen", "get a capture of this window", "screen grab this",
    "let's do a screenshot", "time for a screenshot", "i'd like a screenshot",
    "take a screenshot and tell me what you see", "screenshot and describe it",
]
# Openers that fit a question as well as a command (no "can you who is this guy").
OPENERS = ["", "", "hey ", "ok ", "so ", "alright ", "hey assistant ", "quick question ", "um "]
PREFIXES = ["", "", "", "can you ", "could you ", "please ", "hey ", "hey can you ",
            "i need you to ", "go ahead and ", "would you ", "ok ", "um ", "alright ",
            "can you please ", "hey assistant ", "yo "]
SUFFIXES = ["", "", "", " please", " now", " for me", " real quick", " right now", " thanks",
            " okay"]

LOOK = [
    "look at my screen", "look at this", "take a look at this", "have a look at this",
    "check this out", "check out my screen", "can you see my screen", "can you see this",
    "do you see this", "what's on my screen", "what is on the screen right now",
    "what am i looking at", "see what i see", "look at what i have open", "tell me what you see",
    "what do you see", "describe my screen", "read my screen", "read what's on my screen",
    "scan my screen", "look at this picture", "look at this photo", "look at this page",
    "check my screen", "peek at my screen", "glance at this", "you see that",
    "can you see what i'm watching", "look at this video", "watch this clip", "see this",
    "look here", "look at this real quick", "can you look at my monitor",
    "what's on the display right now", "tell me what's on my screen", "describe what you see",
    "have a look at my screen", "check out this picture", "check out this website",
    "look at the thing on my screen", "can you take a look", "eyes on my screen for a sec",
    "what's showing on my screen", "look at my phone screen", "look at what i just pulled up",
    "look at this for me", "can you look at this", "see my screen", "view my screen",
    "check what's on my screen", "have a look at what i'm reading", "look at this chart",
    "look at my desktop", "can you see what i see", "read this page", "look at my browser",
]

DEICTIC = [
    "what do you think of this", "what do you think about this {item}", "who is this guy",
    "who's this", "who is she", "who is that on the left", "does this outfit work",
    "does this look good on me", "what does that say", "what does this say",
    "what does this sign say", "can you read this", "read this to me", "what's this",
    "what is this thing", "what breed is this", "what kind of {animal} is this",
    "what plant is this", "is this {item} worth it", "is this a good deal", "is this legit",
    "is this email a scam", "is this real or fake", "translate this", "what language is this",
    "summarize this article", "what's wrong with this code", "why am i getting this error",
    "help me with this question", "solve this for me", "what's the answer to number {n} here",
    "which one should i pick", "which of these is better", "rate this", "rate my {item}",
    "how does this look", "does this match", "what color is this", "what font is this",
    "where is this place", "what movie is this from", "what's going on here",
    "explain this chart", "what does this graph mean", "is this grammatically correct",
    "check my spelling here", "what do these numbers mean", "how much does this cost",
    "is this the right one", "which button do i press", "where do i click",
    "what should i reply to this", "how should i respond to this message",
    "what is she saying in this text", "is he flirting with me in this message",
    "do you know who this is", "what's the best move here", "how do i beat this boss",
    "should i buy these", "do these shoes go with this {item}", "is this mushroom safe to eat",
    "what does this word mean", "what's this guy's name", "is this a real painting",
    "what year is this car", "how old is this person", "does this {item} suit me",
    "is this {item} ugly", "what is this bug", "what is this error about",
    "what's that icon", "what is this button for", "what's that in the corner",
    "who made this", "what app is this", "can you explain this diagram",
    "what are these symbols", "is this picture photoshopped", "how do i fill in this form",
    "which of these {item}s do you like", "what do you think of these",
    "tell me about this painting", "how many people are in this photo",
    "what's written here", "can you make sense of this", "what's this about",
    "is this spelled right", "what breed is this cat", "what's in this picture",
    "who's that", "what does this label say", "is this the right size",
    "what do you make of this", "can you check this for me", "what's happening in this video",
    "is this a good photo", "what does this menu say", "which of these shirts is nicer",
    "find the mistake here", "is this price too high", "how do i get past this screen",
]

COUNT_FORMS = [
    "take {count} screenshots", "take {count} screen shots", "grab {count} screenshots",
    "snap {count} screenshots of this", "take another screenshot", "one more screenshot",
    "screenshot please", "screenshot", "screenshot this", "screenshot that", "screenshot it",
    "screenshot now", "screenshots please", "quick screenshot", "screen shot please",
    "another screenshot please", "screenshot again", "take {count} pictures of my screen",
    "capture {count} screenshots", "new screenshot", "screenshot screenshot",
    "screenie please", "do {count} screenshots", "can i have a screenshot",
    "take {count} more screenshots", "one screenshot please", "make {count} screenshots",
    "screenshot the screen", "screenshot the whole page", "screenshot my phone",
]

CHAT = [
    "what's the capital of {country}", "how far is {city} from {city}",
    "what's the weather like in {city} today", "will it rain tomorrow",
    "set a timer for {n} minutes", "wake me up at {time}", "remind me to {chore} tomorrow",
    "play some {genre} music", "tell me a joke about {animal}s", "who was {person}",
    "when was {person} born", "what's your favorite {thing}", "do you like {food}",
    "how do i make {dish}", "what should i cook for dinner", "i'm so {feeling} today",
    "i had a great day at work", "my {relative} is visiting this weekend",
    "tell me about {topic}", "explain {topic} like i'm five", "how does {topic} work",
    "i want to learn {hobby}", "is {hobby} hard to learn", "what's a good {hobby} tip",
    "who won the {sport} game last night", "how many players are on a {sport} team",
    "what does {word} mean", "use {word} in a sentence", "how do you spell {word}",
    "i feel {feeling}", "why am i always so {feeling}", "can you cheer me up",
    "tell me a story", "tell me a bedtime story about a {animal}", "sing me a song",
    "what's the meaning of life", "do you dream", "are you a real person", "how old are you",
    "what's your name", "where are you from", "do you have feelings", "i love you",
    "you're funny", "good morning", "good night", "hello", "hi there", "hey how's it going",
    "what's up", "how are you", "how was your day", "what time is it", "what day is it today",
    "what's the date", "how many days until christmas", "convert {n} miles to kilometers",
    "what's {n} times {n}", "what is the square root of 144", "flip a coin", "roll a dice",
    "pick a number between one and ten", "give me a random fact", "tell me something interesting",
    "what's the tallest mountain in the world", "how deep is the ocean",
    "why is the sky blue", "how do airplanes fly", "what do {animal}s eat",
    "how long do {animal}s live", "are {animal}s smart", "i want a pet {animal}",
    "what's a good name for a {animal}", "i'm thinking of adopting a {animal}",
    "recommend me a book", "recommend a movie for tonight", "have you seen {movie}",
    "what's {movie} about", "is {movie} worth watching", "what should i watch tonight",
    "i just finished a great book", "i'm learning spanish", "how do you say hello in french",
    "translate thank you into japanese", "what language do they speak in {country}",
    "what's the population of {country}", "tell me about {country}",
    "i'm going to {city} next month", "what should i see in {city}", "plan a trip to {country}",
    "what should i pack for a beach trip", "help me write an email to my boss",
    "help me write a birthday message for my {relative}", "write a poem about {animal}s",
    "write a haiku about rain", "give me a workout plan", "how many calories are in {food}",
    "is {food} healthy", "i'm trying to eat healthier", "what's a quick breakfast idea",
    "i can't sleep", "give me tips to fall asleep", "how do i stop procrastinating",
    "i have an exam tomorrow", "i failed my driving test", "i got the job",
    "my {relative} is sick", "my {relative} has a birthday tomorrow",
    "what gift should i buy my {relative}",
    "i broke up with my girlfriend", "i'm going on a first date tonight", "how do i make friends",
    "what's the best way to save money", "should i buy a car or lease one",
    "how do i ask for a raise", "i hate mondays", "it's finally friday",
    "i'm bored", "entertain me", "let's play a game", "let's play twenty questions",
    "ask me a riddle", "quiz me on geography", "what's the answer to the riddle",
    "tell me a fun fact about {topic}", "who invented the telephone",
    "who painted the mona lisa", "when did world war two end", "what's the speed of light",
    "how many bones are in the human body", "what's the biggest planet",
    "is pluto a planet", "what's the difference between a frog and a toad",
    "what's your opinion on pineapple pizza", "do you like {genre}", "what's your favorite band",
    "turn up the volume", "turn the lights off", "call my {relative}", "text my {relative} i'm late",
    "order a pizza", "what's on my calendar tomorrow", "add eggs to my shopping list",
    "set an alarm for {time}", "cancel my alarm", "what's the traffic like",
    "how long to drive to {city}", "find a coffee shop near me", "is the pharmacy open",
    "i'm cooking {dish} tonight", "what goes well with {food}", "can dogs eat {food}",
    "i just got back from {city}", "we went hiking yesterday", "my feet hurt",
    "i'm so hungry", "i need coffee", "ugh i'm so stressed about work", "my boss yelled at me",
    "i got a promotion", "my {animal} is being so cute right now", "my cat knocked over a plant",
    "tell me something nice", "say something in a pirate voice", "do an impression of a robot",
    "speak slower please", "can you talk faster", "repeat that", "what did you say",
    "i didn't catch that", "that's not what i asked", "you're wrong about that",
    "let's change the subject", "what were we talking about", "okay tell me more",
    "can you explain that again", "keep going", "wait stop", "hold on a second",
]

ACKS = [
    "thanks", "thank you so much", "ok", "okay cool", "got it", "that's helpful", "haha",
    "lol that's funny", "nice", "awesome", "great thanks", "you're the best", "never mind",
    "forget it", "bye", "talk later", "hmm", "yeah", "cool", "makes sense", "oh really",
    "interesting", "wow", "i agree", "no way", "fair enough", "perfect", "that's what i thought",
    "good to know", "sounds good", "ok thanks that's all", "you're right",
    "thanks a lot", "oh cool", "ah i see", "ok thank you", "that's great", "huh", "alright then",
    "right", "sure", "okay", "ha nice one", "thanks for the help", "cheers", "oh wow thanks",
    "that's useful", "ok bye", "great", "hmm ok", "yeah that makes sense", "i thought so",
    "oh no", "love it", "that's cool", "exactly", "no worries", "ok cool thanks",
]

# Mentions screens, screenshots, looking or seeing, and asks for nothing on the screen.
HARD_NEGATIVE = [
    "my screen cracked", "my phone screen is cracked again",
    "i dropped my phone and the screen shattered",
    "i hate screenshots", "screenshots are so annoying", "i took a screenshot of the receipt yesterday",
    "i'll send you a screenshot later", "how do i take a screenshot on {device}",
    "what's the shortcut for a screenshot on {device}", "where do my screenshots get saved",
    "look at me", "look at me when i'm talking to you", "see you later", "see you tomorrow",
    "let me see", "i see", "i see what you mean", "nice to see you", "look who's back",
    "look i'm just tired", "looking forward to the weekend", "i can't wait to see {movie}",
    "screen time is bad for kids", "i spend too much time looking at screens",
    "my kids have too much screen time", "the movie theater screen was huge",
    "i need a bigger monitor", "my laptop screen is too dim", "my screen keeps flickering",
    "i have a job screening tomorrow", "don't forget sunscreen", "the screen door is broken",
    "i watched a documentary about screen addiction", "look up the weather in {city}",
    "look up {person}", "look for a recipe for {dish}", "see if it's going to rain",
    "i saw a funny video today", "did you see the game last night", "have you ever seen snow",
    "look it's snowing outside", "i can't see anything without my glasses",
    "i need to get my eyes checked", "my screen protector is peeling", "i'm watching {movie} tonight",
    "do you have eyes", "should i buy a new tv", "my tv screen is too big for the room",
    "what's a screenshot", "who invented the computer screen", "i love watching the sunset",
    "watch out", "see ya", "long time no see", "we'll see", "let's see what happens",
    "i want to see the northern lights", "i went to see my {relative}",
    "i hate looking at myself in photos", "take a picture with me", "take a deep breath",
    "take a break", "take me to {city}", "take it easy", "i need to take a nap",
    "i took {count} photos at the beach", "i screenshotted the recipe already",
    "my screen went black yesterday but it's fine now",
    "my phone says storage full because of screenshots",
    "how do i delete old screenshots", "should i get a matte screen", "i like big screens",
    "i'm looking for a new job", "i'm looking at houses this weekend", "look on the bright side",
    "i'll look into it", "see you in the morning", "i see dead people",
    "how do i change my lock screen", "how do i make my screen brighter",
    "i got a new phone with a huge screen", "my grandma can't see the screen well",
    "i'm tired of staring at a screen all day", "screens before bed ruin my sleep",
    "how do you screenshot on {device}", "what button takes a screenshot",
    "is there a way to take screenshots on {device}", "teach me how to take a screenshot",
    "can you explain how screenshots work", "why are my screenshots blurry",
    "my screenshots folder is a mess", "i accidentally took a screenshot",
    "i always forget how to screenshot", "do you know the screenshot shortcut for {device}",
    "you look great today", "looks like rain", "look out for deer on the road",
    "i'm looking forward to dinner", "i'll see what i can do", "see you next week",
    "let's see a movie tonight", "i can see why you'd think that", "i want to see my {relative}",
    "look, i don't want to argue", "i looked everywhere for my keys", "i need to look good tomorrow",
    "what do you look like", "can you see colors", "how do you see the world",
    "my screen name is cool cat", "my monitor broke", "i bought a new screen for my laptop",
    "the screen on my car is frozen", "do you think screens hurt your eyes",
]

# Negated or cancelled requests: the words are there, the request is not.
NEGATED = [
    "don't take a screenshot", "please don't screenshot anything", "no screenshots please",
    "stop looking at my screen", "you don't need to look at my screen", "never mind the screenshot",
    "don't look at my screen", "cancel the screenshot", "no need to see this",
    "don't look at this yet", "i don't want you to see my screen", "no don't screenshot that",
    "wait don't take it", "forget the screenshot", "you don't have to take a screenshot",
    "stop taking screenshots", "i didn't ask you to look", "please don't look",
]

# "this" / "that" that point at the conversation or the day, not at a screen.
THIS_NOT_SCREEN = [
    "what should i do this weekend", "this weekend i'm going {hobby}", "this morning was rough",
    "i love this song", "this is fun", "this is so cool talking to you",
    "what do you think of this idea, {idea}", "what do you think of this plan, {idea}",
    "is this a good name for a cat, {name}", "i'm thinking about this job offer",
    "this traffic is killing me", "this coffee is amazing", "this weather is crazy",
    "i can't believe this year is almost over", "this is my first time talking to an ai",
    "let me tell you about this guy i met", "who won the {sport} championship this year",
    "how do you say good morning in spanish", "this is taking forever",
    "that's a good point", "that sounds fun", "that's so sad", "this conversation is great",
    "what's this week's forecast", "i'm so tired this afternoon", "that movie was amazing",
    "this {dish} i made is delicious", "tell me more about that", "what do you mean by that",
    "is that true", "why is that", "how is that possible", "that's hilarious",
    "what should i name this {animal} i adopted, she is tiny and grey",
    "i need to finish this report by friday", "this song reminds me of my {relative}",
    "what should i eat this evening", "i want to visit {country} this summer",
    "this guy at work keeps taking my lunch", "this headache won't go away",
]

# Exchanges about something on the screen: the history of a screen conversation.
SCREEN_EXCHANGES = [
    ("what do you think of these shoes",
     "They look great! The white sneakers with the green stripe are really clean."),
    ("look at my screen", "I see a spreadsheet with sales numbers for March."),
    ("who is this guy", "That looks like a man in a grey suit giving a speech at a podium."),
    ("take a screenshot", "Got it. I can see your email inbox with three unread messages."),
    ("does this outfit work", "Yes! The blue jacket goes well with the grey trousers."),
    ("what does that say", "It says the store opens at nine a.m. on weekdays."),
    ("can you see this", "Yes, I can see a photo of a beach at sunset."),
    ("which of these laptops should i buy", "The second one has more memory for the price."),
    ("what breed is this dog", "That looks like a border collie."),
    ("is this a good price", "That's about average for that model of headphones."),
    ("check out this meme", "Ha, the cat in the tiny hat is great."),
    ("read this message for me", "It says: running late, be there in ten minutes."),
    ("what's wrong with my code", "There's a missing bracket at the end of line twelve."),
    ("rate my drawing", "It's lovely, I like the shading on the tree."),
    ("what plant is this", "It looks like a monstera, also called a Swiss cheese plant."),
    ("help me with this math problem", "Sure, for that equation x equals four."),
    ("look at this apartment listing", "It's a bright one-bedroom with a big window, nice find."),
    ("what game is this", "That looks like a racing game, the track is a city at night."),
    ("tell me what you see", "I see a video call with four people in it."),
    ("how does my profile look", "Your photo is friendly; maybe shorten the bio a little."),
    ("screenshot please", "Done. It's a news article about electric cars."),
    ("what do you think of this dress", "The red one is striking, it would be great for a party."),
    ("who is she", "I think that's a singer on stage, she's holding a microphone."),
    ("is this email a scam", "It looks like a scam: the sender address doesn't match the bank."),
    ("what's this bug", "That looks like a ladybug on a green leaf."),
    ("translate this", "It's Italian, it says: the kitchen closes at ten."),
    ("which button do i press", "Press the blue Continue button at the bottom right."),
    ("look at this recipe", "That lasagna recipe looks good, it needs about an hour."),
    ("can you see my screen", "Yes, you have a map of Lisbon open."),
    ("what do these numbers mean", "Those are your monthly expenses; rent is the biggest one."),
    ("what font is this", "It looks like Helvetica, or something close to it."),
    ("look at these two couches", "The grey one on the left looks comfier."),
    ("who's this actor", "That looks like an actor on a red carpet in a black tuxedo."),
    ("what's this chart showing", "It shows website visits going up every month this year."),
    ("take a screenshot of this page", "Done. It's a checkout page with two items in the cart."),
    ("does this look good on me", "Yes, that green shirt really suits you."),
    ("what am i looking at", "It's a satellite photo of a hurricane over the ocean."),
    ("rate these sunglasses", "I'd go with the round ones, they fit your face."),
    ("is this mole normal", "I can't diagnose that; it's worth showing a doctor."),
    ("which pizza should i order", "The one with mushrooms and olives looks tasty."),
]

# Ordinary exchanges: history that has nothing to do with the screen.
CHAT_EXCHANGES = [
    ("tell me a joke", "Why don't skeletons fight each other? They don't have the guts."),
    ("what's the capital of spain", "Madrid."),
    ("how was your day", "Pretty good! I love chatting with you."),
    ("recommend me a book", "Try The Hobbit, it's a fun adventure."),
    ("i'm feeling a bit sad", "I'm sorry to hear that. Do you want to talk about it?"),
    ("give me a fun fact", "Octopuses have three hearts."),
    ("ask me a riddle", "What has keys but can't open locks? A piano."),
    ("what does serendipity mean", "It means finding something good by chance."),
    ("sing me a song", "Twinkle twinkle little star, how I wonder what you are."),
    ("what should i cook tonight", "How about a quick stir fry with vegetables and rice?"),
    ("tell me a story", "Once upon a time a little fox found a golden key in the snow."),
    ("who was cleopatra", "She was the last active ruler of the Ptolemaic Kingdom of Egypt."),
    ("what's a good name for a puppy", "How about Biscuit?"),
    ("quiz me on capitals", "Sure! What's the capital of Canada?"),
    ("how do i make pancakes", "Mix flour, milk, eggs and a pinch of sugar, then fry them."),
    ("i can't sleep", "Try breathing slowly and counting backwards from one hundred."),
    ("what's the weather today", "It looks sunny with a high of twenty degrees."),
    ("what's your favorite color", "I like blue, it's calm."),
    ("suggest a movie", "How about Spirited Away?"),
    ("i got a new puppy", "Congratulations! What's its name?"),
    ("give me a word to learn", "Try ephemeral: something that lasts a very short time."),
    ("tell me a knock knock joke", "Knock knock. Who's there? Lettuce. Lettuce in, it's cold!"),
    ("what should i do this weekend", "Maybe a hike, or a lazy movie day."),
    ("how do you say cat in spanish", "Gato."),
    ("what's two plus two", "Four."),
    ("pick a number", "Seven."),
    ("i'm learning guitar", "That's great! Start with the G, C and D chords."),
    ("name a planet", "Jupiter, the biggest one."),
    ("what's a healthy snack", "Apple slices with peanut butter."),
    ("give me a compliment", "You have a great sense of humor."),
    ("what's a synonym for happy", "Joyful."),
    ("tell me a riddle", "What gets wetter the more it dries? A towel."),
    ("who wrote hamlet", "William Shakespeare."),
    ("play a word game with me", "Sure! Give me a word that rhymes with cat."),
    ("what's the tallest animal", "The giraffe."),
    ("name a famous painter", "Vincent van Gogh."),
    ("how are you", "I'm great, thanks for asking!"),
    ("give me a motivational quote", "The best time to start is now."),
    ("teach me a spanish word", "Mariposa, it means butterfly."),
    ("what's a good dinner idea", "Tacos with grilled chicken and salsa."),
]

FOLLOW_UPS = [
    "and this one", "what about this one", "and now", "how about now", "what about now",
    "and this", "now this one", "ok and this", "how about this one", "and what about these",
    "next one", "what about that one", "and that one", "look again", "one more", "another one",
    "again", "do it again", "same question for this one", "what about the one on the right",
    "and the other one", "is this one better", "what about this", "this one too",
    "ok what about the next", "and the second one", "and here", "what about here",
    "how about the blue one", "and the last one",
    "how about these", "and the next one", "what about the other",
    "ok and what about now", "what about the red one",
    "and now this", "ok one more", "and the third one", "what about the left one",
    "and the rest", "ok now", "and after that one", "and over here", "now try this one",
    "compare it with this one", "and this one here", "is this one any better", "what about the top one",
    "and the bottom one", "and these", "now look again",
]

# Follow-ups that point at the screen themselves: yes after any history.
DEICTIC_FOLLOW_UPS = [
    "and what about this page", "and this pic", "and this guy", "and what does this say",
    "and what about this picture", "how about this page", "now what do you see",
    "and what's this", "and who is this", "ok and what do you think of this dress",
    "and this photo", "what about this screenshot", "and can you read this",
]

SCREEN_OFFERS = [
    ("i can't figure out this form", "Want me to take a look at your screen?"),
    ("my code won't compile", "Should I take a screenshot so I can see the error?"),
    ("i'm shopping for a dress", "Do you want me to look at the one you're viewing?"),
    ("i don't understand this chart", "Shall I look at your screen and explain it?"),
    ("this website is confusing", "Want me to see what's on your screen?"),
    ("i'm stuck on this level", "Do you want me to look at the game?"),
    ("my friend sent me a weird message", "Should I read it on your screen?"),
    ("i'm not sure which photo to post", "Want me to look at them?"),
    ("i'm filling out my tax form", "Do you want me to check the screen with you?"),
    ("i found a cute apartment online", "Want me to take a look?"),
    ("i got a weird error", "Want me to look at the error on your screen?"),
    ("i'm editing a photo", "Should I take a look at it?"),
    ("i wrote an essay", "Do you want me to read it off your screen?"),
    ("i can't find the settings", "Want me to look at your screen and find it?"),
    ("i'm picking a paint color", "Should I look at the colors you have up?"),
    ("my bank app shows something strange", "Want me to take a screenshot and check?"),
    ("i'm choosing between two flights", "Shall I look at the options on your screen?"),
    ("i drew something", "Can I see it?"),
    ("my spreadsheet formula is broken", "Want me to look at the sheet on your screen?"),
    ("i'm reading a contract", "Should I read the page you have open?"),
    ("i need help with this puzzle", "Want me to take a look at the puzzle?"),
    ("i'm comparing two phones", "Should I look at the comparison you have up?"),
    ("this recipe is confusing", "Do you want me to read it from your screen?"),
    ("i'm not sure about my outfit", "Want me to take a look at the photo?"),
    ("the game map is confusing", "Should I take a screenshot and find where you are?"),
    ("i got a strange text", "Want me to read it?"),
    ("my homework has a diagram", "Shall I look at the diagram?"),
    ("i'm designing a logo", "Can I have a look at it?"),
]
OTHER_OFFERS = [
    ("i'm bored", "Want to hear a joke?"),
    ("i can't sleep", "Should I tell you a calming story?"),
    ("i'm hungry", "Want me to suggest a recipe?"),
    ("i have a test tomorrow", "Do you want me to quiz you?"),
    ("i'm going to paris", "Want some tips for the trip?"),
    ("i feel lonely", "Would you like to talk for a while?"),
    ("i need to wake up early", "Should I set an alarm for six?"),
    ("i like poems", "Want me to write you one?"),
    ("i'm learning french", "Shall we practice some phrases?"),
    ("i want to get fit", "Do you want a simple workout plan?"),
    ("i'm sad", "Do you want a hug?"),
    ("i need a gift idea", "Want me to list a few?"),
    ("i'm nervous about my interview", "Should we practice some questions?"),
    ("it's my birthday", "Want me to sing happy birthday?"),
    ("i'm cold", "Want some tips to warm up?"),
    ("i don't know what to cook", "Shall I pick a recipe for you?"),
    ("i forgot the lyrics", "Want me to sing the chorus?"),
    ("i can't decide on a movie", "Should I choose one for you?"),
    ("i want to learn a new word", "Shall I teach you one?"),
    ("i'm stressed", "Do you want to try a breathing exercise?"),
    ("i miss my grandma", "Would you like to tell me about her?"),
    ("i'm going running", "Want me to start a timer?"),
    ("i like space", "Shall I tell you a fact about Mars?"),
    ("i'm planning a party", "Want me to make a checklist?"),
    ("i need to call my mom", "Should I remind you later?"),
    ("i can't think of a name for my cat", "Want some name ideas?"),
    ("i'm bored at work", "Want to play a quick word game?"),
    ("i have a headache", "Do you want some tips that might help?"),
]
AGREE = ["yes", "yes please", "yeah", "sure", "yeah go ahead", "please do", "yep", "of course",
         "go for it", "definitely", "uh huh", "sure thing", "do it", "ok do it", "yeah why not",
         "absolutely", "go ahead", "yes do that", "ok", "alright", "sounds good", "yeah please",
         "that would be great", "please", "yes go on", "yeah sure", "ok go ahead", "sure go for it",
         "yes that'd help", "mhm", "yes you can", "please do that",
         "okay yes", "sure why not", "yeah that's fine", "yes thanks", "i'd like that",
         "go on then", "yup"]
DECLINE = ["no thanks", "not now", "nah", "no it's fine", "maybe later", "no don't",
           "nope", "i'm good", "no need", "not right now", "nah i'm okay", "no thank you",
           "don't bother", "that's okay", "i'll pass", "no i got it", "nah forget it",
           "not yet", "no leave it", "no it's private", "no that's alright", "nah not now",
           "no i'll figure it out", "please don't", "nope not needed", "no skip it"]

# ------------------------------------------------------------------ speech-recognizer noise

HOMOPHONES = {
    "screenshot": ["screen shot", "screenshots", "screen shop", "scream shot", "screenshop"],
    "screen": ["scream", "screens", "skreen"], "see": ["sea"], "look": ["luke"],
    "there": ["their"], "you": ["ya"], "your": ["you're"], "to": ["too"], "for": ["four"],
    "right": ["write"], "know": ["no"], "what's": ["whats"],
    "i'm": ["im"], "don't": ["dont"], "it's": ["its"], "want to": ["wanna"],
    "going to": ["gonna"], "can you": ["can u", "could ya"],
}
FILLERS = ["um ", "uh ", "so ", "okay so ", "hey ", "", "", "", "", ""]


def typo(word: str, rng: random.Random) -> str:
    """A slip of the keyboard. Speech recognizers write real words (the homophones above);
    typed turns misspell, mostly in longer words."""
    if len(word) < 5 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    op = rng.randrange(3)
    if op == 0:
        return word[:i] + word[i + 1:]  # dropped letter
    if op == 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]  # swapped letters
    return word[:i] + word[i] + word[i:]  # doubled letter


def speak(text: str, rng: random.Random) -> str:
    """One utterance as a user might type it, or as a speech recognizer might write it."""
    if rng.random() < 0.3:  # written: sentence case and punctuation
        question = re.match(r"((hey|um|ok|so|yo|alright|please|hey assistant) )*(what|who|how|is|"
                            r"are|can|could|do|does|which|where|why|will|should|would)\b", text)
        out = text[0].upper() + text[1:]
        return out + ("?" if question else rng.choice([".", "", "!"]))
    out = text.lower()
    if rng.random() < 0.35:
        for src, alts in HOMOPHONES.items():
            if re.search(rf"\b{re.escape(src)}\b", out) and rng.random() < 0.5:
                out = re.sub(rf"\b{re.escape(src)}\b", rng.choice(alts), out, count=1)
                break
    words = out.split()
    if words and rng.random() < 0.15:
        i = rng.randrange(len(words))
        words[i] = typo(words[i], rng)
    out = " ".join(words)
    if rng.random() < 0.5:
        out = out.replace("'", "")
    return rng.choice(FILLERS) + re.sub(r"[.,!?]", "", out)


def fill(template: str, rng: random.Random) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: rng.choice(FILL[m.group(1)]), template)


HISTORY_STYLES = [("User: ", "\nAssistant: ", "\n"), ("user: ", " assistant: ", " "),
                  ("Human: ", "\nAI: ", "\n")]


def transcript(exchanges: list[tuple[str, str]], rng: random.Random) -> str:
    user, assistant, sep = rng.choices(HISTORY_STYLES, weights=[6, 2, 2])[0]
    turns = [f"{user}{speak(u, rng)}{assistant}{a}" for u, a in exchanges]
    return sep.join(turns)


# ------------------------------------------------------------------ composition


@dataclass(frozen=True)
class Example:
    text: str
    history: str
    label: str


class Pool:
    """A family's items, each in one split (seeded shuffle: 70 / 12 / 18). Items are dealt
    like cards, every item once before any twice, so no phrasing floods a split."""

    def __init__(self, name: str, items: list) -> None:
        order = list(items)
        random.Random(f"split-{name}").shuffle(order)
        n_test = max(1, round(len(order) * FRACTIONS["test"]))
        n_val = max(1, round(len(order) * FRACTIONS["validation"]))
        self.parts = {"test": order[:n_test], "validation": order[n_test:n_test + n_val],
                      "train": order[n_test + n_val:]}
        self.decks: dict[str, list] = {}

    def pick(self, split: str, rng: random.Random):
        deck = self.decks.setdefault(split, [])
        if not deck:
            deck += self.parts[split]
            rng.shuffle(deck)
        return deck.pop()


def direct_templates() -> list[str]:
    return [f"{v} {n}" for v in SCREENSHOT_VERBS for n in SCREENSHOT_NOUNS] + DIRECT_EXTRA


POOLS = {
    "direct": Pool("direct", direct_templates()), "look": Pool("look", LOOK),
    "deictic": Pool("deictic", DEICTIC), "count": Pool("count", COUNT_FORMS),
    "chat": Pool("chat", CHAT), "ack": Pool("ack", ACKS), "hard": Pool("hard", HARD_NEGATIVE),
    "negated": Pool("negated", NEGATED), "this": Pool("this", THIS_NOT_SCREEN),
    "screen_ex": Pool("screen_ex", SCREEN_EXCHANGES), "chat_ex": Pool("chat_ex", CHAT_EXCHANGES),
    "follow": Pool("follow", FOLLOW_UPS),
    "deictic_follow": Pool("deictic_follow", DEICTIC_FOLLOW_UPS),
    "screen_offer": Pool("screen_offer", SCREEN_OFFERS),
    "other_offer": Pool("other_offer", OTHER_OFFERS), "agree": Pool("agree", AGREE),
    "decline": Pool("decline", DECLINE),
}

# (family, label, examples over all splits, share of examples that get unrelated history)
FAMILIES = [
    ("direct", "yes", 200, 0.15), ("look", "yes", 180, 0.15), ("deictic", "yes", 270, 0.15),
    ("count", "yes", 90, 0.1), ("chat", "no", 1550, 0.15), ("ack", "no", 150, 0.3),
    ("hard", "no", 420, 0.15), ("negated", "no", 70, 0.1), ("this", "no", 180, 0.15),
]
CONVERSATIONS = 260  # per kind below: follow-ups after screen / unrelated chat, offers, ...


def utterance(pool: str, split: str, rng: random.Random) -> str:
    template = POOLS[pool].pick(split, rng)
    if pool == "direct":
        template = rng.choice(PREFIXES) + template + rng.choice(SUFFIXES)
    elif pool in ("look", "deictic") and rng.random() < 0.4:
        template = rng.choice(OPENERS) + template + rng.choice(SUFFIXES[:4])
    return speak(fill(template, rng), rng)


def chat_history(split: str, rng: random.Random, turns: int | None = None) -> list[tuple[str, str]]:
    count = turns or rng.choice([1, 1, 1, 2, 2, 3])
    return [POOLS["chat_ex"].pick(split, rng) for _ in range(count)]


def examples_for(split: str) -> list[Example]:
    out: list[Example] = []
    share = FRACTIONS[split]
    for family, label, total, with_history in FAMILIES:
        rng = random.Random(f"{family}-{split}")
        for _ in range(round(total * share)):
            history = transcript(chat_history(split, rng), rng) if rng.random() < with_history else ""
            out.append(Example(utterance(family, split, rng), history, label))
    rng = random.Random(f"conversations-{split}")
    for _ in range(round(CONVERSATIONS * share)):
        follow = speak(POOLS["follow"].pick(split, rng), rng)
        older = chat_history(split, rng, 1) if rng.random() < 0.3 else []
        screen = older + [POOLS["screen_ex"].pick(split, rng)]
        # The same words decide nothing alone: after a screen question they ask about the
        # screen again, after ordinary chat they do not.
        out.append(Example(follow, transcript(screen, rng), "yes"))
        out.append(Example(follow, transcript(chat_history(split, rng), rng), "no"))
        # After a screen question, ordinary chat and thanks are still no.
        for pool in rng.sample(["chat", "ack", "ack", "hard", "this", "negated"], 2):
            out.append(Example(utterance(pool, split, rng), transcript(screen, rng), "no"))
        # A follow-up that points at the screen itself asks whatever came before.
        if rng.random() < 0.3:
            history = screen if rng.random() < 0.5 else chat_history(split, rng)
            out.append(Example(speak(POOLS["deictic_follow"].pick(split, rng), rng),
                               transcript(history, rng), "yes"))
        # A screen question right after ordinary chat is yes.
        pool = rng.choice(["direct", "look", "deictic", "count"])
        out.append(Example(utterance(pool, split, rng), transcript(
            [POOLS["screen_ex"].pick(split, rng)] + chat_history(split, rng), rng), "yes"))
    for _ in range(round(CONVERSATIONS * share * 0.8)):
        # "yes please" answers the assistant's last offer: to look at the screen, or not.
        agree = speak(POOLS["agree"].pick(split, rng), rng)
        out.append(Example(agree, transcript([POOLS["screen_offer"].pick(split, rng)], rng), "yes"))
        out.append(Example(agree, transcript([POOLS["other_offer"].pick(split, rng)], rng), "no"))
        decline = speak(POOLS["decline"].pick(split, rng), rng)
        out.append(Example(decline, transcript([POOLS["screen_offer"].pick(split, rng)], rng), "no"))
    return out


def normalized(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def build() -> dict[str, list[Example]]:
    for pool in POOLS.values():
        pool.decks.clear()
    splits = {split: examples_for(split) for split in SPLITS}
    seen: set[tuple[str, str]] = set()
    trained: set[str] = set()
    kept: dict[str, list[Example]] = {}
    for split in SPLITS:  # train first: a repeat in a later split is dropped, not trained on
        kept[split] = []
        for ex in splits[split]:
            key = (normalized(ex.text), ex.history)
            # Two pools may share a short phrase ("sure"): held-out words stay unseen.
            if key in seen or (split != "train" and key[0] in trained):
                continue
            seen.add(key)
            if split == "train":
                trained.add(key[0])
            kept[split].append(ex)
        random.Random(f"order-{split}").shuffle(kept[split])
    return kept


def write(out_dir: Path) -> dict[str, Counter]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {}
    for split, examples in build().items():
        with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for ex in examples:
                row = {"text": ex.text, "label": ex.label}
                if ex.history:
                    row["history"] = ex.history
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        stats[split] = Counter(ex.label for ex in examples)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    for split, counts in write(args.out).items():
        total = sum(counts.values())
        print(f"{split}: {total} examples, {counts['yes']} yes ({counts['yes'] / total:.0%})")


if __name__ == "__main__":
    main()
