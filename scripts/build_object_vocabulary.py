"""Build ``mmapp/data/objects/vocabulary.tsv``: one row per usable real-object source image.

    python scripts/build_object_vocabulary.py [--tuxpaint DIR] [--emoji DIR] [--noto DIR] [--twemoji DIR]
                                              [--out TSV] [--list-dropped]

Reads the installed packages (``bash scripts/install_object_sources.sh`` installs them):

- Debian ``tuxpaint-stamps-default``: each ``NAME.png`` outside ``symbols/`` and ``*/cartoon/``,
  named by the first line of its ``NAME.txt`` ("A red kangaroo.");
- npm ``@lobehub/fluent-emoji-3d``: each single-code-point ``<hex>[-fe0f].webp``, named by
  ``unicodedata.name()``;
- the Noto and Twemoji drawings of every emoji kept from Fluent (``<hex>.png``, the same code
  point and so the same noun), where the set has one: the same thing drawn by other artists.

Every hand decision lives in the tables below, so a change is a reviewable diff: ``CLASSES``
(the allow-list: each noun and its one supercategory), ``SYNONYMS`` (variety or synonym -> the
everyday name), ``PLURALS`` (irregular plurals), ``TUX_NOUNS`` / ``EMOJI_NOUNS`` (per-image
overrides; ``None`` drops the image) and the drop filters. A name that maps to no class is dropped
and listed by ``--list-dropped``. The TSV is sorted by (source, key); the per-supercategory counts
are printed at the end (docs/objects.md quotes them).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mmapp.data.objects.sources import SOURCES, SUPERCATEGORIES, find_sources  # noqa: E402

OUT = REPO / "mmapp" / "data" / "objects" / "vocabulary.tsv"
HEADER = ("source", "key", "noun", "plural", "supercategory")
MIN_SIDE = 32  # opaque bounding box's longer side, in pixels: smaller cut-outs are specks

# ---------------------------------------------------------------------------------------------
# The classes: supercategory -> nouns (basic-level everyday names; each noun in exactly one).
CLASSES: dict[str, str] = {
    "animal": """antelope, badger, bat, bear, beaver, bison, buffalo, bull, camel, capybara, cat,
        chimpanzee, chipmunk, cow, crocodile, deer, dinosaur, dog, donkey, echidna, elephant,
        ferret, fox, frog, giraffe, goat, gorilla, hedgehog, hippo, horse, kangaroo, koala,
        leopard, lion, lizard, llama, marmot, monkey, moose, mouse, orangutan, otter, pig,
        raccoon, rabbit, rat, reindeer, rhino, sheep, skunk, sloth, slug, snail, snake,
        squirrel, tiger, turtle, wildebeest, wombat, worm, yak, zebra, boar""",
    "bird": """bird, chick, chicken, crane, crow, duck, eagle, flamingo, goose, guinea fowl, heron,
        magpie, ostrich, owl, parrot, peacock, pelican, penguin, pigeon, seagull, swan, toucan,
        turkey, vulture""",
    "sea animal": """coral, crab, dolphin, fish, jellyfish, lobster, mussel, octopus, orca, oyster,
        seahorse, seal, seashell, shark, shrimp, squid, whale""",
    "insect": """ant, bee, beetle, butterfly, caterpillar, cockroach, cricket, fly, grasshopper,
        hornet, ladybug, mantis, mosquito, moth, scorpion, spider, woodlouse""",
    "fruit": """apple, apricot, avocado, banana, blueberry, cherry, coconut, grapes, kiwi, lemon,
        lime, mango, melon, orange, peach, pear, pineapple, pomegranate, raspberry, strawberry,
        watermelon""",
    "vegetable": """broccoli, carrot, chili pepper, corn, cucumber, eggplant, garlic, ginger,
        lettuce, mushroom, onion, pea pod, pepper, potato, pumpkin, squash, sweet potato,
        tomato, beans""",
    "food": """almond, bacon, bagel, bread, burrito, cake, candy, candy cane, cheese, chestnut,
        chocolate, cookie, croissant, cupcake, curry, custard, donut, dumpling, easter egg, egg,
        fries, hamburger, honey, hot dog, ice cream, lollipop, meat, noodles, olive, pancake,
        peanut, pecan, pie, pizza, popcorn, pretzel, pudding, rice, salad, sandwich, spaghetti,
        sushi, taco, waffle, walnut, butter, chicken leg""",
    "drink": """beer, bubble tea, champagne, cocktail, coffee, juice box, milk, soda, wine""",
    "plant": """cactus, christmas tree, clover, flower, herb, holly, hyacinth, lavender, leaf,
        lotus, palm tree, pinecone, potted plant, rose, seedling, sunflower, tree, tulip,
        daffodil, hibiscus, iris, marigold""",
    "person": """person""",
    "vehicle": """airplane, ambulance, bicycle, boat, bus, cable car, camper, car, dump truck,
        fire truck, garbage truck, helicopter, hot-air balloon, motorcycle, police car,
        race car, rickshaw, rocket, satellite, scooter, ship, taxi, tractor, train, tram,
        tricycle, truck, van, wheelchair""",
    "building": """castle, church, factory, fountain, hospital, house, hut, mosque, office building,
        school, stadium, synagogue, temple, tent""",
    "outdoor object": """gravestone, mailbox, fuel pump, rock, traffic cone, traffic light""",
    "tool": """anchor, axe, binoculars, bolt, cement mixer, chain, clamp, compass, flashlight, gear,
        hammer, hook, ladder, magnet, magnifying glass, microscope, nutcracker, paintbrush,
        palette, pickaxe, pliers, ruler, saw, scissors, screwdriver, shovel, stethoscope,
        syringe, tape measure, telescope, test tube, thermometer, toolbox, wheel, wrench""",
    "instrument": """accordion, banjo, bassoon, cello, cymbal, drum, drum kit, flute, guitar,
        maracas, piano, saxophone, trumpet, violin""",
    "clothing item": """boot, cap, coat, crown, dress, eyeglasses, glove, goggles, graduation cap,
        hat, helmet, jeans, ring, sandal, scarf, shoe, shorts, sock,
        sunglasses, swimsuit, t-shirt, tie, vest, watch""",
    "household item": """backpack, bandage, barrel, basket, bathtub, bed, bell, book, bottle, bowl,
        box, briefcase, broom, bucket, can, candle, chair, chopsticks, clipboard, clothespin,
        coin, couch, credit card, crutch, cup, door, envelope, fan, filing cabinet,
        fire extinguisher, folder, frying pan, gas cylinder, glass, handbag, hourglass, jar,
        kettle, key, lantern, lightbulb, lipstick, lock, marker, mirror, mouse trap, mug,
        nail polish, needle, newspaper, notebook, paperclip, pen, pencil, pepper grinder,
        picture frame, pill, pitcher, plug, plunger, pushpin, razor, safety pin, salt shaker,
        scale, shopping bag, shopping cart, shower, soap, sponge, spoon, suitcase, teapot,
        thread, toilet, toilet paper, toothbrush, trash can, umbrella, vase, wind chime,
        window, yarn, knife, baby bottle, crayon,
        battery, camera, computer, computer mouse, game controller, headphones, joystick,
        keyboard, laptop, megaphone, microphone, phone, printer, projector, radio,
        satellite dish, television, video camera""",
    "sports item": """badminton racket, baseball, basketball, bow, bowling ball, boxing glove,
        cricket ball, cricket bat, curling stone, diving mask, fishing rod, football, frisbee,
        hockey stick, ice skate, medal, ping-pong paddle, pool ball, roller skate, rugby ball,
        skateboard, ski, sled, soccer ball, tennis ball, tennis racket, trophy, volleyball""",
    "toy": """abacus, balloon, boomerang, chess piece, dartboard, dice, doll, gift, kite, pinata,
        puzzle piece, rubber duck, slide, teddy bear, yo-yo""",
}

# Irregular plurals; every other noun takes the regular rule in ``plural()`` (on its last word).
PLURALS: dict[str, str] = {
    "mouse": "mice", "computer mouse": "computer mice", "sheep": "sheep", "deer": "deer",
    "fish": "fish", "bison": "bison", "moose": "moose", "buffalo": "buffaloes", "yak": "yaks",
    "reindeer": "reindeer", "shrimp": "shrimp", "person": "people", "goose": "geese",
    "knife": "knives", "leaf": "leaves", "scarf": "scarves", "wildebeest": "wildebeest",
    "potato": "potatoes", "tomato": "tomatoes", "sweet potato": "sweet potatoes",
    "mango": "mangoes", "cactus": "cacti", "octopus": "octopuses", "grapes": "grapes",
    "beans": "beans", "fries": "fries", "noodles": "noodles", "rice": "rice", "corn": "corn",
    "spaghetti": "spaghetti", "bread": "bread", "cheese": "cheese", "meat": "meat",
    "honey": "honey", "butter": "butter", "bacon": "bacon", "mosquito": "mosquitoes", "popcorn": "popcorn", "chocolate": "chocolates",
    "salad": "salads", "curry": "curries", "custard": "custards", "milk": "milk",
    "coffee": "coffees", "wine": "wine", "beer": "beers", "champagne": "champagne",
    "bubble tea": "bubble teas", "soda": "sodas", "sushi": "sushi", "broccoli": "broccoli",
    "lettuce": "lettuces", "garlic": "garlic", "ginger": "ginger", "lavender": "lavender",
    "holly": "holly", "clover": "clover", "mantis": "mantises", "dice": "dice",
    "binoculars": "binoculars", "pliers": "pliers", "scissors": "scissors",
    "eyeglasses": "eyeglasses", "sunglasses": "sunglasses", "goggles": "goggles",
    "jeans": "jeans", "pants": "pants", "shorts": "shorts", "chopsticks": "chopsticks",
    "headphones": "headphones", "maracas": "maracas", "thread": "threads", "yarn": "yarn",
    "toilet paper": "toilet paper", "soap": "soaps", "woodlouse": "woodlice",
    "hippo": "hippos", "rhino": "rhinos", "piano": "pianos", "yo-yo": "yo-yos",
    "kangaroo": "kangaroos", "avocado": "avocados", "taco": "tacos", "burrito": "burritos",
    "hot-air balloon": "hot-air balloons", "tv": "tvs", "pinata": "pinatas",
}

# Variety or synonym (as cleaned from a description or an emoji name) -> the class's noun.
SYNONYMS: dict[str, str] = {
    # animals
    "chimp": "chimpanzee", "gnu": "wildebeest", "blackbuck": "antelope",
    "indian blackbuck": "antelope", "mountaingoat": "goat", "ram": "sheep", "lamb": "sheep",
    "zebu": "cow", "ox": "bull", "water buffalo": "buffalo", "dromedary": "camel",
    "dromedary camel": "camel", "bactrian camel": "camel", "caribou": "reindeer",
    "doe": "deer", "wapiti": "deer", "dingo": "dog", "poodle": "dog", "guide dog": "dog",
    "hippopotamus": "hippo", "rhinoceros": "rhino", "iguana": "lizard", "tamarin": "monkey",
    "emperor tamarin": "monkey", "european bear": "bear", "sauropod": "dinosaur",
    "t-rex": "dinosaur", "sea lion": "seal", "bunny": "rabbit",
    # birds
    "rooster": "chicken", "hen": "chicken", "drake": "duck", "gander": "goose",
    "helmeted guinea fowl": "guinea fowl", "peahen": "peacock", "albino peahen": "peacock",
    "peafowl": "peacock", "rhea": "ostrich", "adelaide rosella": "parrot",
    "rainbow lorikeet": "parrot", "silver gull": "seagull", "gull": "seagull",
    "crowned crane": "crane", "great blue heron": "heron", "little penguin": "penguin",
    "magellanic penguin": "penguin", "pink flamingo": "flamingo", "tucan": "toucan",
    "baby chick": "chick", "front-facing baby chick": "chick", "blackbird": "bird",
    "lark": "bird", "cuckoo": "bird", "quetzal": "bird", "bluebird": "bird",
    # sea animals
    "blue groper": "fish", "butterflyfish": "fish", "clownfish": "fish", "coral trout": "fish",
    "dolphinfish": "fish", "lionfish": "fish", "moon wrasse": "fish", "stripey fish": "fish",
    "tropical fish": "fish", "blowfish": "fish", "spiny lobster": "lobster",
    "spiral shell": "seashell", "abalone": "seashell", "freshwater mussel": "mussel",
    "spouting whale": "whale",
    # insects
    "honeybee": "bee", "lady beetle": "ladybug", "hoverfly": "fly", "xanthia": "moth",
    "bug": "caterpillar",
    # fruit and vegetables
    "red apple": "apple", "green apple": "apple", "kiwifruit": "kiwi", "mandarin": "orange",
    "mandarin orange": "orange", "tangerine": "orange", "seville orange": "orange",
    "cherries": "cherry", "blueberries": "blueberry", "aubergine": "eggplant",
    "chile pepper": "chili pepper", "hot pepper": "chili pepper", "bell pepper": "pepper",
    "green pepper": "pepper", "yellow pepper": "pepper", "ear of maize": "corn",
    "sweet yellow corn": "corn", "yam": "sweet potato", "roasted sweet potato": "sweet potato",
    "pattypan squash": "squash", "garlic bulb": "garlic", "ginger root": "ginger",
    "jack-o-lantern": "pumpkin", "jack-o’-lantern": "pumpkin", "red lettuce": "lettuce",
    # food and drink
    "slice of pizza": "pizza", "baguette bread": "bread", "soft ice cream": "ice cream",
    "doughnut": "donut", "chocolate bar": "chocolate", "shortcake": "cake",
    "birthday cake": "cake", "honey pot": "honey", "meat on bone": "meat",
    "cut of meat": "meat", "poultry leg": "chicken leg", "cooked rice": "rice",
    "curry and rice": "curry", "steaming bowl": "noodles", "french fries": "fries",
    "green salad": "salad", "pancakes": "pancake", "peanuts": "peanut",
    "cheese wedge": "cheese", "mince pie": "pie", "christmas pudding": "pudding",
    "chocolate easter egg": "easter egg", "hot beverage": "coffee", "glass of milk": "milk",
    "wine glass": "wine", "cocktail glass": "cocktail", "tropical drink": "cocktail",
    "beer mug": "beer", "bottle with popping cork": "champagne", "cup with straw": "soda",
    "beverage box": "juice box", "walnut in its shell": "walnut",
    # plants
    "evergreen tree": "tree", "deciduous tree": "tree", "birch": "tree", "holm oak": "tree",
    "pili nut tree": "tree", "four leaf clover": "clover", "shamrock": "clover",
    "maple leaf": "leaf", "fallen leaf": "leaf", "blossom": "flower", "cherry blossom": "flower",
    "bouquet": "flower", "wilted flower": "flower", "thyme plant": "herb", "cep": "mushroom",
    "red headed cep": "mushroom", "anemone flower": "flower", "pigface flower": "flower",
    "hibiscus flower": "hibiscus", "gazania": "flower", "white star petunia": "flower",
    "petunia": "flower", "balsam": "flower", "anthurium": "flower", "adenium": "flower",
    "plastic flower": "flower", "flower covered in dew drops": "flower",
    "lavender plant": "lavender", "holly leaves": "holly",
    # vehicles
    "automobile": "car", "oncoming automobile": "car", "sedan car": "car", "sports car": "car",
    "vw beetle": "car", "pickup truck": "truck", "delivery truck": "truck",
    "articulated lorry": "truck", "fire engine": "fire truck", "oncoming police car": "police car",
    "oncoming taxi": "taxi", "oncoming bus": "bus", "trolleybus": "bus", "minibus": "van",
    "recreational vehicle": "camper", "steam locomotive": "train", "railway car": "train",
    "high-speed train": "train", "high-speed train with bullet nose": "train", "metro": "train",
    "light rail": "train", "monorail": "train", "mountain railway": "train",
    "tram car": "tram", "mountain cableway": "cable car", "aerial tramway": "cable car",
    "rowboat": "boat", "speedboat": "boat", "motor boat": "boat", "canoe": "boat",
    "sailboat": "boat", "walnut sailboat": "boat", "passenger ship": "ship", "ferry": "ship",
    "small airplane": "airplane", "airplane departure": "airplane",
    "airplane arriving": "airplane", "racing motorcycle": "motorcycle", "racing car": "race car", "motor scooter": "scooter", "auto rickshaw": "rickshaw",
    "motorized wheelchair": "wheelchair", "manual wheelchair": "wheelchair",
    "pink tricycle": "tricycle", "dumper": "dump truck",
    # buildings and outdoor objects
    "house building": "house", "house with garden": "house", "japanese castle": "castle",
    "european castle": "castle", "hindu temple": "temple", "headstone": "gravestone",
    "tombstone": "gravestone", "grave marker": "gravestone", "cemetery marker": "gravestone",
    "monument stone": "gravestone", "horizontal traffic light": "traffic light",
    "vertical traffic light": "traffic light", "postbox": "mailbox", "uk post box": "mailbox",
    "closed mailbox with lowered flag": "mailbox", "closed mailbox with raised flag": "mailbox",
    "open mailbox with raised flag": "mailbox", "open mailbox with lowered flag": "mailbox",
    # tools
    "nut and bolt": "bolt", "compression": "clamp", "electric torch": "flashlight",
    "left-pointing magnifying glass": "magnifying glass",
    "right-pointing magnifying glass": "magnifying glass", "straight ruler": "ruler",
    "triangular ruler": "ruler", "black scissors": "scissors", "lower left paintbrush":
    "paintbrush", "paintbrush": "paintbrush", "artist palette": "palette", "pick": "pickaxe",
    "chains": "chain", "carpentry saw": "saw", "garden spade": "shovel", "spade": "shovel",
    "measuring tape": "tape measure", "mallet": "hammer", "metal mallet": "hammer",
    "adjustable wrench": "wrench", "plumber’s wrench": "wrench", "mercury thermometer": "thermometer",
    # instruments
    "musical keyboard": "piano", "drum with drumsticks": "drum", "long drum": "drum",
    "floor tom drum": "drum", "crash cymbal": "cymbal", "electric guitar": "guitar",
    "classical guitar": "guitar", "electric bass guitar": "guitar",
    # clothing
    "womans hat": "hat", "top hat": "hat", "fedora": "hat", "feathered hat": "hat",
    "propeller hat": "hat", "sombrero": "hat", "baseball cap": "cap", "billed cap": "cap",
    "military helmet": "helmet", "helmet with white cross": "helmet", "necktie": "tie",
    "bikini": "swimsuit", "one-piece swimsuit": "swimsuit", "mans shoe": "shoe",
    "athletic shoe": "shoe", "high-heeled shoe": "shoe", "flat shoe": "shoe",
    "ballet shoes": "shoe", "womans sandal": "sandal", "thong sandal": "sandal",
    "womans boots": "boot", "hiking boot": "boot", "lab coat": "coat", "safety vest": "vest",
    "gloves": "glove", "socks": "sock", "dark sunglasses": "sunglasses",
    "t shirt": "t-shirt",
    # household items
    "closed umbrella": "umbrella", "umbrella on ground": "umbrella", "amphora": "vase",
    "izakaya lantern": "lantern", "teacup without handle": "cup", "tumbler glass": "glass",
    "glass of water": "glass", "bowl with spoon": "bowl", "hocho": "knife",
    "dagger knife": "knife", "cooking": "frying pan", "canned food": "can",
    "school satchel": "backpack", "purse": "handbag", "shopping bags": "shopping bag",
    "shopping trolley": "shopping cart", "luggage": "suitcase", "lotion bottle": "bottle",
    "oil drum": "barrel", "scales": "scale", "hourglass with flowing sand": "hourglass",
    "electric light bulb": "lightbulb", "old key": "key", "open lock": "lock",
    "bellhop bell": "bell", "electric plug": "plug", "frame with picture": "picture frame",
    "file cabinet": "filing cabinet", "wastebasket": "trash can", "garbage can": "trash can",
    "silver garbage can": "trash can", "wheelie bin": "trash can",
    "home compost bin": "trash can", "couch and lamp": "couch", "closed book": "book",
    "open book": "book", "green book": "book", "blue book": "book", "orange book": "book",
    "notebook with decorative cover": "notebook", "spiral note pad": "notebook",
    "round pushpin": "pushpin", "package": "box", "rolled-up newspaper": "newspaper",
    "file folder": "folder", "adhesive bandage": "bandage", "sewing needle": "needle",
    "spool of thread": "thread", "ball of yarn": "yarn", "roll of paper": "toilet paper",
    "bar of soap": "soap", "lower left ballpoint pen": "pen", "lower left fountain pen": "pen",
    "lower left crayon": "crayon", "highlighting pen": "marker", "dry erase marker": "marker",
    "folding hand fan": "fan", "electric kettle": "kettle", "gas cylinder": "gas cylinder",
    "modern clothespin": "clothespin", "old-fashioned clothespin": "clothespin",
    "desktop computer": "computer", "personal computer": "laptop",
    "three button mouse": "computer mouse", "mobile phone": "phone", "black telephone": "phone",
    "camera with flash": "camera", "movie camera": "video camera", "headphone": "headphones",
    "studio microphone": "microphone", "video game": "game controller",
    "public address loudspeaker": "megaphone", "cheering megaphone": "megaphone",
    "satellite antenna": "satellite dish", "film projector": "projector",
    # sports items and toys
    "tennis racquet and ball": "tennis racket", "ski and ski boot": "ski",
    "basketball and hoop": "basketball", "american football": "football",
    "football used in australian rules": "football", "rugby football": "rugby ball",
    "cricket bat and ball": "cricket bat", "field hockey stick and ball": "hockey stick",
    "ice hockey stick and puck": "hockey stick", "table tennis paddle and ball": "ping-pong paddle",
    "badminton racquet and shuttlecock": "badminton racket", "bow and arrow": "bow",
    "sports medal": "medal", "military medal": "medal", "first place medal": "medal",
    "second place medal": "medal", "third place medal": "medal", "softball": "baseball",
    "flying disc": "frisbee", "billiards": "pool ball", "bowling": "bowling ball",
    "fishing pole and fish": "fishing rod", "soccer": "soccer ball", "trophy cup": "trophy",
    "game die": "dice", "direct hit": "dartboard", "wrapped present": "gift",
    "nesting dolls": "doll", "jigsaw puzzle piece": "puzzle piece", "playground slide": "slide",
    "black chess pawn": "chess piece", "rag doll": "doll",
}

# Per-image overrides for Tux Paint (key -> noun; None drops it). Reasons in the comments.
TUX_NOUNS: dict[str, str | None] = {
    # more than one object, or not one concrete everyday thing
    "animals/mammals/wildboar.png": None,              # two boars
    "plants/flowers/flower4.png": None,                # two flowers
    "plants/flowers/flower7.png": None,                # several flowers
    "plants/mushrooms/cep-2.png": None,                # two ceps
    "food/vegetables/garlics.png": "garlic",           # a string of garlic bulbs
    "plants/eggplant.png": None,                       # a whole plant, not the vegetable
    "plants/lettuce_bolted.png": None,
    "plants/flowers/appooppanthady.png": None,         # milkweed seed fluff
    "plants/trees/rambutan.png": None,
    "plants/trees/holly_leaves.png": "holly",
    "plants/trees/birch.png": "tree",                 # "an alien tree"
    "food/fruit/cherimoya.png": None,                  # not an everyday name
    "animals/mammals/bears/toys/edward_bear.png": "teddy bear",
    "people/toys/grannysmith.png": "doll",
    "seasonal/christmas/German_Christmas_toy.png": None,  # a figurine with a local name
    "seasonal/christmas/Roast_turkey.png": None,       # would share "turkey" with the bird
    "seasonal/christmas/Christmas_Tree_photo.png": "christmas tree",
    "seasonal/christmas/Candy_cane_photo_1.png": "candy cane",
    "seasonal/christmas/Candy_cane_photo_2.png": "candy cane",
    "seasonal/christmas/Mince_Pie.png": "pie",
    "seasonal/christmas/Christmas_pudding.png": "pudding",
    "seasonal/candle.png": "candle",
    "seasonal/halloween/jackolantern_mean.png": "pumpkin",
    "food/pizza.png": "pizza",
    "food/vegetables/broccoli.png": "broccoli",
    "food/vegetables/tomato.png": "tomato",
    "food/fruit/avocado.png": "avocado",
    "food/spices/ginger.png": "ginger",
    "animals/mammals/bovines/gnu-baby-stand.png": "wildebeest",
    "animals/mammals/bovines/gnu-baby.png": "wildebeest",
    "animals/mammals/rhino_black.png": "rhino",
    "animals/mammals/rodents/capybara.png": "capybara",
    "animals/mammals/rabbit_little.png": "rabbit",
    "animals/mammals/rodents/rabbit-2.png": "rabbit",
    "animals/mammals/pig_golden.png": "pig",
    "animals/mammals/pig_golden2.png": "pig",
    "animals/insects/hoverfly.png": "fly",
    "animals/insects/lionfish.png": "fish",
    "animals/fish/lionfish.png": "fish",
    "animals/fish/bluegroper.png": "fish",
    "animals/fish/lobster.png": "lobster",
    "animals/birds/albino_peahen.png": "peacock",
    "animals/birds/peacock.png": "peacock",
    "household/toilet.png": "toilet",
    "household/wheelie_bin.png": "trash can",
    "household/dishes/utensils/nutcracker.png": "nutcracker",
    "household/tools/cementmixer.png": "cement mixer",
    "household/cylinder.png": "gas cylinder",
    "household/tools/mallet_metal.png": "hammer",
    "household/arttools/scissors_small_closed.png": "scissors",
    "household/arttools/scissors_small_open.png": "scissors",
    "hobbies/binoculars.png": "binoculars",
    "hobbies/music/percussion/drumkit.png": "drum kit",
        "medical/stethoscope.png": "stethoscope",
    "medical/tooth.png": None,                         # body part (a drawing)
    "people/body_parts/eye.png": None,                 # body part
    "military/fireman240a.png": "person",              # the same file as people/fireman240a.png
    "people/fireman200b.png": "person",
    "people/fireman240a.png": "person",
    "space/spacewalk.png": "person",                   # one astronaut
    "military/paratrooper.png": None,                  # a person under a parachute
    "military/final-roll-call.png": None,              # a memorial arrangement
    "military/ammunition/old_naval_shell.png": None,
    "military/vehicles/bradley.png": None,             # armoured vehicles and guns
    "military/vehicles/infantry-stryker.png": None,
    "military/vehicles/ww2_german_gun.png": None,
    "military/vehicles/f22_raptor.png": "airplane",
    "vehicles/7spoke256.png": "wheel",
    "vehicles/wheel_tractor.png": "wheel",
    "vehicles/auto/beetle.png": "car",
    "vehicles/auto/truck.png": "truck",
    "vehicles/construction/dumper.png": "dump truck",
    "vehicles/emergency/sedan_police.png": None,       # emblems only, no car
    "vehicles/flight/balloon360.png": "hot-air balloon",
    "vehicles/flight/planes/747.png": "airplane",
    "vehicles/masstransit/green_korean_bus.png": "bus",
    "vehicles/race/indycar.png": "race car",
    "vehicles/ship/chineseJunk.png": "ship",
    "vehicles/ship/walnutBoat.png": "boat",
    "space/voyager2.png": "satellite",
    "space/apollo_lander.png": None,
    "sports/rugby_goal_posts.png": None,
    "sports/australian_rules_football.png": "football",
    "sports/football.png": "football",
    "town/roadsigns/traffic_cone.png": "traffic cone",
    "town/uk_post_box.png": "mailbox",
    "town/usps_mailbox.png": "mailbox",
    "town/roadsigns/stoplight_01_red.png": None,       # flat drawings on an opaque square
    "town/roadsigns/stoplight_02_yellow.png": None,
    "town/roadsigns/stoplight_03_green.png": None,
    "town/monuments/inukshuk-outline.png": None,       # an outline drawing
    "town/monuments/inukshuk-photo.png": None,         # a landmark with no everyday name
    "clothes/button.png": None,                        # line drawings, not photographs:
    **{f"clothes/t_{name}.png": None for name in (
        "baseballcap", "glove", "jacket", "pants", "poloshirt", "scarf", "shirt", "sock", "tshirt")},
    # seasonal clip art: cartoon drawings, characters or specks (a photo of each is kept)
    "seasonal/christmas/Santa.png": None, "seasonal/christmas/bow.png": None,
    "seasonal/christmas/candy_cane.png": None, "seasonal/christmas/hard_candy.png": None,
    "seasonal/christmas/lamp.png": None, "seasonal/christmas/santahat.png": None,
    "seasonal/christmas/star.png": None, "seasonal/christmas/stocking.png": None,
    "seasonal/christmas/tree.png": None, "seasonal/christmas/xmas_tp_bulb.png": None,
    "seasonal/christmas/xmaswreath.png": None, "seasonal/easter/bluebird.png": None,
    "seasonal/easter/bunny-egg.png": None, "seasonal/easter/bunny-head.png": None,
    "seasonal/easter/bunny.png": None, "seasonal/easter/butterfly.png": None,
    "seasonal/easter/chick-hatched.png": None, "seasonal/easter/chick-in-egg.png": None,
    "seasonal/easter/chick.png": None, "seasonal/easter/daffodil.png": None,
    "seasonal/halloween/bat_left.png": None, "seasonal/halloween/blackcat.png": None,
    "seasonal/halloween/ghost.png": None, "seasonal/halloween/skull.png": None,
    "seasonal/halloween/spider.png": None, "seasonal/hanukkah/dreydl.png": None,
    "seasonal/hanukkah/dreydl-gimmel.png": None, "seasonal/hanukkah/dreydl-hay.png": None,
    "seasonal/hanukkah/dreydl-nun.png": None, "seasonal/hanukkah/dreydl-shin.png": None,
    "seasonal/hanukkah/holiday_candle.png": None, "seasonal/hanukkah/menorah.png": None,
    "seasonal/newyears/party-hat.png": None, "seasonal/newyears/party-horn-in.png": None,
    "seasonal/newyears/party-horn-out.png": None,
}

# Tux Paint folders whose images are all dropped (signs, flags, planets, weather, explosions).
TUX_DROP_DIRS = ("town/roadsigns/", "town/flags/", "space/planets/", "space/moon/",
                 "naturalforces/", "seasonal/newyears/")

# Emoji: names dropped before any mapping (faces, hands, people, flags, symbols, clocks,
# arrows, signs, hearts, moon phases, zodiac, letters, keycaps, weather, scenes).
EMOJI_DROP = re.compile(
    r"\b(FACE|HANDS?|FIST|FINGERS?|INDEX|THUMBS|PERSON|PEOPLE|MAN|WOMAN|MEN|WOMEN|BOY|GIRL|"
    r"CHILD|CHILDREN|ADULT|BABY|FAMILY|COUPLE|KISS|BRIDE|PRINCE|PRINCESS|FLAGS?|SYMBOL|SIGN|"
    r"ARROWS?|HEARTS?|CLOCK|OCLOCK|MOON|STAR|SUN|CLOUD|RAIN|SNOW|LETTERS?|LETTER|KEYCAP|SQUARED|"
    r"CIRCLED|IDEOGRAPH|CIRCLE|SQUARE|TRIANGLE|DIAMOND|MARK|BUTTON|SILHOUETTE|SPEAKER|"
    r"ARIES|TAURUS|GEMINI|CANCER|LEO|VIRGO|LIBRA|SCORPIUS|SAGITTARIUS|CAPRICORN|AQUARIUS|"
    r"PISCES|OPHIUCHUS|SUIT|NIGHT|SUNRISE|SUNSET|CITYSCAPE|CLINKING)\b")

# Emoji code points newer than this Python's Unicode database (Unicode 15.0 names).
UNICODE_15_NAMES: dict[int, str] = {
    0x1F6DC: "WIRELESS", 0x1FA75: "LIGHT BLUE HEART", 0x1FA76: "GREY HEART",
    0x1FA77: "PINK HEART", 0x1FA87: "MARACAS", 0x1FA88: "FLUTE", 0x1FAAD: "FOLDING HAND FAN",
    0x1FAAE: "HAIR PICK", 0x1FAAF: "KHANDA", 0x1FABB: "HYACINTH", 0x1FABC: "JELLYFISH",
    0x1FABD: "WING", 0x1FABF: "GOOSE", 0x1FACE: "MOOSE", 0x1FACF: "DONKEY",
    0x1FADA: "GINGER ROOT", 0x1FADB: "PEA POD", 0x1FAE8: "SHAKING FACE",
    0x1FAF7: "LEFTWARDS PUSHING HAND", 0x1FAF8: "RIGHTWARDS PUSHING HAND",
}

# Emoji names whose plain lower-case form would be wrong (-> noun; None drops it).
EMOJI_NOUNS: dict[str, str | None] = {
    "HATCHING CHICK": None, "DRAGON": None, "UNICORN FACE": None, "MAMMOTH": None, "DODO": None,
    "MICROBE": None, "EAR OF RICE": None, "LEAF FLUTTERING IN WIND": None, "WHITE FLOWER": None,
    "FRIED SHRIMP": None, "FORK AND KNIFE": None, "FORK AND KNIFE WITH PLATE": None,
    "SAKE BOTTLE AND CUP": None, "HAMMER AND WRENCH": None, "HAMMER AND PICK": None,
    "TELEPHONE RECEIVER": None, "PISTOL": None, "BOMB": None, "CROSSED SWORDS": None,
    "CIRCUS TENT": None, "CAROUSEL HORSE": None, "RUNNING SHIRT WITH SASH": None,
    "WOMANS CLOTHES": None, "KIMONO": None, "SARI": None, "POUCH": None, "BRIEFS": None,
    "GEM STONE": None, "MONEY BAG": None, "FLYING SAUCER": None, "PARACHUTE": None,
    "SNOWMAN": None, "SNOWMAN WITHOUT SNOW": None, "TEACUP WITHOUT HANDLE": "cup",
    "BUS STOP": None, "STATION": None, "SPIDER WEB": None, "EMPTY NEST": None,
    "NEST WITH EGGS": None, "WING": None, "FEATHER": None, "WOOD": None, "BONE": None,
    "ROCKET": "rocket", "SATELLITE": "satellite", "POLICE CARS REVOLVING LIGHT": None,
    "RACING CAR": "race car", "LEAFY GREEN": None, "POT OF FOOD": None,
    "SHALLOW PAN OF FOOD": None, "STUFFED FLATBREAD": None, "FLATBREAD": None,
    "FORTUNE COOKIE": None, "MOON CAKE": None,
    # kept although a drop word (BABY, BUTTON, HAND, FLAG, ARROW) is in the name
    "BABY BOTTLE": "baby bottle", "BABY CHICK": "chick", "FRONT-FACING BABY CHICK": "chick",
    "BOW AND ARROW": "bow", "THREE BUTTON MOUSE": "computer mouse", "FOLDING HAND FAN": "fan",
    "CLOSED MAILBOX WITH LOWERED FLAG": "mailbox", "CLOSED MAILBOX WITH RAISED FLAG": "mailbox",
    "OPEN MAILBOX WITH RAISED FLAG": "mailbox", "OPEN MAILBOX WITH LOWERED FLAG": "mailbox",
}


def plural(noun: str) -> str:
    """The plural of a noun: ``PLURALS`` first, else the regular English rule on its last word."""
    if noun in PLURALS:
        return PLURALS[noun]
    head, _, last = noun.rpartition(" ")
    if last in PLURALS:
        last = PLURALS[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def noun_table() -> dict[str, str]:
    """noun -> supercategory, from ``CLASSES``; refuses a noun listed under two supercategories."""
    table: dict[str, str] = {}
    for supercategory, nouns in CLASSES.items():
        if supercategory not in SUPERCATEGORIES:
            raise ValueError(f"unknown supercategory {supercategory!r}")
        for noun in (n.strip() for n in nouns.split(",")):
            if noun in table:
                raise ValueError(f"{noun!r} is under both {table[noun]!r} and {supercategory!r}")
            table[noun] = supercategory
    return table


_ARTICLES = ("a ", "an ", "the ", "some ")
_CONTAINERS = ("pair of ", "bunch of ", "head of ", "string of ", "plant of ", "quarter of ",
               "baby of a ", "sitting ", "sleeping ")
_ADJECTIVES = {"red", "green", "yellow", "blue", "brown", "white", "black", "pink", "purple",
               "silver", "colorful", "little", "small", "very", "large", "big", "ripe", "male",
               "female", "sweet", "common", "whole", "sliced", "eared", "sumatran", "tamworth",
               "european", "modern", "old-fashioned", "lit", "poisonous", "floppy-eared"}


def clean_description(text: str) -> str:
    """A Tux Paint description's first clause, lower-case, without articles or colour/size words.

    "A red kangaroo." -> "kangaroo"; "A bunch of grapes." -> "grapes"; "A “Fuji” apple." -> "fuji apple".
    """
    t = text.strip().lower()
    t = re.sub(r"[“”\"'‘]", "", t).replace("’", "’")
    t = re.split(r"[.!?,;:(—]", t, maxsplit=1)[0].strip()
    changed = True
    while changed:
        changed = False
        for prefix in _ARTICLES + _CONTAINERS:
            if t.startswith(prefix):
                t, changed = t[len(prefix):].strip(), True
        words = t.split()
        if len(words) > 1 and words[0] in _ADJECTIVES:
            t, changed = " ".join(words[1:]), True
    return t


def to_noun(phrase: str, table: dict[str, str], tail: bool = True) -> str | None:
    """A cleaned name -> a class noun: the whole phrase, then (``tail``) its last two words, then
    its last word, each through ``SYNONYMS``; None when none is a class."""
    words = phrase.split()
    candidates = (phrase, " ".join(words[-2:]), words[-1] if words else "") if tail else (phrase,)
    for candidate in candidates:
        noun = SYNONYMS.get(candidate, candidate)
        if noun in table:
            return noun
    return None


def is_single_code_point(stem: str) -> bool:
    """An emoji file stem of one code point, alone or followed by the emoji presentation selector."""
    parts = stem.lower().split("-")
    if not re.fullmatch(r"[0-9a-f]{2,6}", parts[0]):
        return False
    return len(parts) == 1 or (len(parts) == 2 and parts[1] == "fe0f")


def emoji_name(stem: str) -> str | None:
    """The Unicode name of a single-code-point emoji file stem; None when unknown."""
    code = int(stem.split("-")[0], 16)
    try:
        return unicodedata.name(chr(code))
    except ValueError:
        return UNICODE_15_NAMES.get(code)


def emoji_noun(name: str, table: dict[str, str]) -> str | None:
    """A Unicode emoji name -> a class noun ("RED APPLE" -> "apple", "DOG FACE" -> None)."""
    if name in EMOJI_NOUNS:
        return EMOJI_NOUNS[name]
    if EMOJI_DROP.search(name):
        return None
    return to_noun(name.lower(), table, tail=False)  # "FERRIS WHEEL" is no wheel


def tuxpaint_noun(key: str, description: str | None, table: dict[str, str]) -> str | None:
    """A Tux Paint stamp (key relative to the stamps folder, its description) -> a class noun."""
    if key in TUX_NOUNS:
        return TUX_NOUNS[key]
    if key.startswith("symbols/") or "/cartoon/" in f"/{key}" or key.startswith(TUX_DROP_DIRS):
        return None
    if description is None or Path(key).stem.endswith("_mirror"):
        return None  # mirrored copies have no description and would leak across splits
    return to_noun(clean_description(description), table)


def _opaque_side(path: Path) -> int:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
    ys, xs = np.nonzero(alpha > 8)
    if len(ys) == 0 or (alpha > 8).all():
        return 0  # nothing opaque, or no transparency at all: not a cut-out
    return int(max(ys.max() - ys.min(), xs.max() - xs.min()) + 1)


def collect(tuxpaint: Path, emoji: Path, drawings: dict[str, Path] | None = None,
            ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """-> kept rows (source, key, noun) and dropped (source, key, reason). drawings: other emoji
    sets (source -> folder of ``<hex>.png``) whose picture of each kept Fluent emoji is kept too."""
    table = noun_table()
    kept, dropped, seen = [], [], set()

    def keep(source: str, key: str, noun: str | None, path: Path, label: str) -> None:
        if noun is None:
            dropped.append((source, key, f"no class: {label}"))
            return
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest in seen:
            dropped.append((source, key, "duplicate file"))
            return
        if _opaque_side(path) < MIN_SIDE:
            dropped.append((source, key, f"cut-out under {MIN_SIDE} px or not a cut-out"))
            return
        seen.add(digest)
        kept.append((source, key, noun))

    for path in sorted(tuxpaint.rglob("*.png")):
        key = path.relative_to(tuxpaint).as_posix()
        if key.startswith("symbols/") or "/cartoon/" in f"/{key}":
            continue
        txt = path.with_suffix(".txt")
        description = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0] if txt.exists() else None
        keep("tuxpaint", key, tuxpaint_noun(key, description, table), path, description or "(no description)")
    for path in sorted(emoji.glob("*.webp")):
        if not is_single_code_point(path.stem):
            continue
        name = emoji_name(path.stem) or "(unnamed)"
        keep("emoji", path.name, emoji_noun(name, table), path, name)
    for source, folder in sorted((drawings or {}).items()):
        for _, key, noun in [row for row in kept if row[0] == "emoji"]:
            path = folder / f"{key.split('.')[0].removesuffix('-fe0f')}.png"
            if path.exists():
                keep(source, path.name, noun, path, noun)
            else:
                dropped.append((source, path.name, f"no {source} picture of {noun}"))
    return kept, dropped


def write_tsv(rows: list[tuple[str, str, str]], out: Path) -> None:
    table = noun_table()
    lines = ["\t".join(HEADER)]
    for source, key, noun in sorted(rows):
        lines.append("\t".join((source, key, noun, plural(noun), table[noun])))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def summary(rows: list[tuple[str, str, str]]) -> str:
    """Classes and images per supercategory, as a Markdown table."""
    table = noun_table()
    images = Counter(table[noun] for _, _, noun in rows)
    per_noun = Counter(noun for _, _, noun in rows)
    classes = Counter(table[noun] for noun in per_noun)
    multi = Counter(table[noun] for noun, n in per_noun.items() if n >= 2)
    by_source = Counter(source for source, _, _ in rows)
    out = ["| supercategory | classes | with >= 2 images | images |", "|---|---:|---:|---:|"]
    for s in SUPERCATEGORIES:
        out.append(f"| {s} | {classes[s]} | {multi[s]} | {images[s]} |")
    out.append(f"| **all** | **{len(per_noun)}** | **{sum(multi.values())}** | **{len(rows)}** |")
    out.append("\nimages by source: " + ", ".join(f"{s} {by_source[s]}" for s in SOURCES))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tuxpaint", help="Tux Paint stamps folder")
    parser.add_argument("--emoji", help="fluent-emoji-3d assets folder")
    parser.add_argument("--noto", help="Noto emoji PNGs folder")
    parser.add_argument("--twemoji", help="Twemoji PNGs folder")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--list-dropped", action="store_true", help="print every dropped image and why")
    args = parser.parse_args(argv)
    dirs = find_sources(args.tuxpaint, args.emoji, args.noto, args.twemoji)
    rows, dropped = collect(dirs.tuxpaint, dirs.emoji, {"noto": dirs.noto, "twemoji": dirs.twemoji})
    unused = sorted(set(noun_table()) - {noun for _, _, noun in rows})
    if unused:
        raise SystemExit(f"classes with no image (remove them from CLASSES): {', '.join(unused)}")
    write_tsv(rows, args.out)
    if args.list_dropped:
        for source, key, reason in dropped:
            print(f"dropped\t{source}\t{key}\t{reason}")
    print(f"wrote {args.out} ({len(rows)} images, {len(dropped)} dropped)")
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
