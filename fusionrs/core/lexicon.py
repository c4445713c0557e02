"""Word lists shared by caption cleaning, the IR-aware caption filter and the cue captioner.

Kept in one place so that "content word", "IR cue" and "RGB colour" mean the same thing in
every stage that uses them.
"""

import re

# Scene- and object-level nouns of aerial imagery (RSICD/NWPU/UCM classes and their parts).
# A caption with none of these carries no scene supervision ("no_content").
CONTENT_WORDS = frozenset("""
airport airports runway runways airplane airplanes plane planes aircraft jet terminal apron
baseball diamond basketball tennis court courts soccer football field fields stadium
track playground golf course bareland bare land desert sand sands dune dunes beach beaches coast
coastline shore sea ocean wave waves island islands lake lakes pond ponds pool pools river rivers
stream water waters reservoir harbor harbour port ports dock docks pier piers ship ships boat boats
bridge bridges viaduct road roads highway highways freeway street streets lane lanes intersection
interchange roundabout overpass railway railways railroad train station car cars vehicle vehicles
truck trucks parking lot lots building buildings house houses home homes roof roofs residential
commercial industrial area areas factory factories warehouse warehouses church tower towers
storage tank tanks plant plants farmland farmlands farm farms crop crops cropland paddy terrace
terraced orchard vineyard meadow meadows grass grassland lawn forest forests tree trees wood woods
woodland vegetation bush bushes shrub shrubs park parks garden mountain mountains hill hills
valley cliff rock rocks snow glacier cloud clouds wetland marsh swamp school campus square
center centre city town village urban suburb neighborhood block blocks container containers
crane cranes circle circular greenhouse solar panel panels wind turbine turbines mine quarry
canal dam ground grounds yard thermal power substation chaparral medium dense sparse mobile
""".split())

# Words that say "this is a picture" and nothing about its content.
GENERIC_WORDS = frozenset("""
a an the this that is are was it its of in on at from with and or image images picture pictures
photo photos photograph photography shot view views aerial satellite top down overhead above
remote sensing scene scenes sample example untitled no caption img jpg jpeg png tif file
stock here there shown showing shows taken some
""".split())

# Small English vocabulary used beside the language-ID model: short captions are hard for any
# language identifier, and a caption made of these words is English whatever the model says.
ENGLISH_WORDS = frozenset("""
a an the this that these those is are was were be been being it its of in on at from with and or
but not no there here some many several few lots lot large small big little long short wide
narrow near next beside around between across along through over under into by to for as
which who where while two three four five six seven eight nine ten one side sides middle
left right top bottom upper lower surrounded located lies lie stands stand built covered full
dense sparse green white gray grey dark bright red blue brown yellow black light piece pieces
parallel straight curved winding neat neatly arranged rows row group groups each other all
some both has have having with without very also lined line lines connected area areas part
""".split()) | CONTENT_WORDS | GENERIC_WORDS

# IR-cue lexicon: words that describe infrared-style appearance (intensity, contrast, outline,
# texture). Superset of the official output audit's list (§10) so both scorers agree.
IR_CUE_WORDS = frozenset("""
bright brighter brightest brightness dark darker darkest darkness grayscale greyscale gray grey
intensity intensities contrast contrasting contrasted outline outlines outlined silhouette edge
edges texture textured textureless low-texture smooth uniform tone tones tonal luminance glow
glowing shadow shadows shade shaded infrared ir pale light lighter highlighted highlights
""".split())
OFFICIAL_IR_CUE_WORDS = frozenset(
    "bright brightness contrast dark grayscale infrared intensity outline outlines texture thermal".split())

# The official output audit's colour terms (official implementation §10); the caption filter's
# list below (strict-v3) adds "turquoise".
OFFICIAL_RGB_COLOR_WORDS = frozenset(
    "red green blue yellow orange purple pink brown cyan magenta beige gold golden".split())
RGB_COLOR_WORDS = frozenset(
    "red green blue yellow orange purple pink brown golden gold turquoise cyan magenta beige".split())

# Strings that are not caption content: stock-photo marks, copyright, map/imagery credits, URLs.
BOILERPLATE_PATTERNS = [
    ("credit", re.compile(r"\b(?:imagery|map data|image|data)\s*(?:©|\(c\)|copyright)\s*\d{0,4}[^.;:]*[.;:]?", re.I)),
    # "© 2020 Google Inc" / "Copyright Maxar": the mark, a year and up to three Capitalised words.
    ("copyright", re.compile(r"(?:©|\([cC]\)|\b[Cc]opyright\b)\s*(?:\d{4}\s*)?(?:[A-Z][\w&.-]*(?:\s+|$)){0,3}")),
    ("rights", re.compile(r"\ball rights reserved\b", re.I)),
    ("stock_photo", re.compile(
        r"\b(?:stock (?:photo|image|photography|footage|picture)s?|royalty[- ]free|"
        r"shutterstock|getty ?images|istock(?:photo)?|alamy|dreamstime|depositphotos|123rf|adobe stock|"
        r"vector illustration|watermark)\b(?:\s+(?:of|with|showing))?", re.I)),
    ("map_source", re.compile(
        r"\b(?:(?:on|in|from|via|using|by)\s+)?(?:google(?: (?:earth|maps?))?|bing maps?|apple maps|"
        r"openstreetmap|map data|imagery date|digitalglobe|maxar|airbus ds|cnes|landsat ?/ ?copernicus|"
        r"image ©?\s*\d{4}|data sio,? noaa[^.]*|u\.s\. navy,? nga,? gebco)\b", re.I)),
    ("url", re.compile(r"\b(?:https?://|www\.)\S+", re.I)),
]

TOKEN_RE = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())
