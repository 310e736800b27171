"""What the identifier step shows: the user's image and phrase, or a decoy.

For an identifier nobody registered, the page shows a decoy derived from an
HMAC of the normalised identifier with a key derived from ``idp.hmac_key``:
the same number always shows the same decoy, on every node, and nothing on
the page says whether the number is registered. Decoys come from the same
catalogue as real choices and pass the same validation (3-40 characters, no
control characters); they change only when ``idp.hmac_key`` does.

Anyone can read this file, so a decoy phrase must not be told from a real
one by its words, shape or case (AUTH-26). People write their phrase about
what they know: their own and their family's names, pets, food, places,
school, games and teams, a year, a motto; in Malay, English or both, in
Title case, lower case or as a sentence, mostly without punctuation, often
in two or three words. The generator draws from that whole space: many
shapes, word classes of a few hundred entries each, names from every
community, years weighted to when pupils and parents were born, and the
ways people vary case and spelling. The same generator suggests phrases at
registration and first sign-in, so chosen phrases and decoys overlap by
construction too.

Every choice is read from an HMAC stream (HMAC-SHA256 in counter mode), not
from :mod:`random`, so a decoy depends only on the key and the identifier,
never on the Python version.

Rare words (AUTH-26, see tests/unit/services/test_decoy_classifier.py):
real phrases hold words no list has (a family nickname, a local dish), so
decoys do too: a share of them is "particular" and has new words drawn from
character models of the lists, any letter string being possible; typing
quirks (run-together words, slips, chat spellings, an emoji) come at low
rates. Measured classifiers score 57-68 % across corpora and keys; the
test module's docstring has the numbers and the open cases.

Images are drawn uniformly from the catalogue, except that a decoy whose
phrase names a pictured thing shows that picture at a set rate, as people
who write about their cat often choose the cat. Registration offers no
default image and we hold no data on which pictures people prefer, so a
non-uniform prior over the catalogue would be a guess; an attacker who
knew real choices' skew gains at most half its total-variation distance.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import re
import secrets

from idp import security_images
from idp.forms.register import PHRASE_MAX, PHRASE_MIN
from idp.security_images import SecurityImage
from idp.services.ratelimit import address_prefix

# The limiters every identifier lookup counts in, and the key each one uses
# for a client address (AUTH-27).
LOOKUP_LIMITS = (
    ("login.lookup.address", lambda address: address),
    ("login.lookup.prefix", address_prefix),
    ("login.lookup.global", lambda address: "site"),
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split("|") if w.strip())


# Word classes. Capitalised as people write them when they do: names and
# places upper case, common words lower case; the case style comes later.
_MALAY_NAMES = _words(
    "Ahmad|Ali|Aiman|Amir|Amirul|Adam|Arif|Azlan|Aziz|Danial|Danish|Faiz|Fahmi|"
    "Farhan|Firdaus|Hafiz|Hakim|Haziq|Hazwan|Ikhwan|Ilham|Irfan|Iskandar|Izzat|"
    "Khairul|Luqman|Mikail|Naim|Najib|Rayyan|Razak|Ridhwan|Rizal|Syafiq|Syahmi|"
    "Umar|Yusuf|Zaki|Zikri|Zulkifli|Aina|Aisyah|Alya|Amani|Anis|Aqilah|Ayra|Balqis|"
    "Damia|Dania|Farah|Fatimah|Hana|Hanis|Humaira|Iman|Intan|Irdina|Izzah|Khadijah|"
    "Liyana|Maisarah|Mira|Nabila|Nadia|Najwa|Nur|Nurul|Puteri|Qaseh|Qistina|Safiya|"
    "Sarah|Siti|Sofea|Syifa|Wardah|Yasmin|Zahra|Zara|Zulaikha|Mat|Minah|Senah|Leha|"
    "Abu|Awang|Dayang|Wan|Nik|Tengku|Megat|Che"
)
_CHINESE_SURNAMES = _words(
    "Tan|Lim|Lee|Ng|Ong|Wong|Goh|Chan|Chong|Teh|Yap|Lau|Chua|Koh|Low|Foo|Ho|Leong|"
    "Khoo|Cheah|Liew|Yeoh|Kok|Soh"
)
_CHINESE_NAMES = _words(
    "Wei Ming|Wei Jie|Jun Hao|Zhi Hao|Jia Hui|Mei Ling|Xin Yi|Hui Min|Kah Wai|"
    "Chee Keong|Boon Hock|Siew Lan|Ah Kow|Ah Meng|Ah Boy|Ah Girl|Mei Mei|Jia Jia|"
    "Kai Xin|Yi Xuan|Zi Yang|Jun Wei|Li Ying|Shu Fen|Kok Leong|Ming|Ling|Xiao Long"
)
_INDIAN_NAMES = _words(
    "Kumar|Priya|Kavitha|Lakshmi|Ganesh|Suresh|Ramesh|Kavin|Kavya|Devi|Meena|"
    "Saravanan|Thanabalan|Muthu|Arjun|Vijay|Rajesh|Sharmila|Anand|Deepa|Divya|"
    "Harish|Kishen|Nisha|Pavithra|Revathi|Shalini|Tharshini|Vikram|Yuvan|Sanjay|"
    "Mugilan|Tamilselvi|Letchumi|Gopal|Siva"
)
_OTHER_NAMES = _words(
    "Daniel|Sofia|Jane|Jessica|Michael|David|John|Mary|Ryan|Ethan|Aaron|Chloe|"
    "Emily|Grace|Joshua|Nathan|Sarah Jane|Ken|Jason|Melissa|Vanessa|Nicole|Kenny|"
    "Jacky|Alvin|Angel|Bryan|Elaine|Joanne|Dayang Senandung|Awang Selamat"
)
_KIN = _words(
    "abang|kakak|adik|mak|ayah|ibu|mama|papa|abah|umi|walid|atuk|nenek|opah|tok wan|"
    "tok|wan|pak cik|mak cik|pak long|mak long|pak su|mak su|along|angah|achik|"
    "kak long|abang long|abang ngah|adik bongsu|anak|cucu|suami|isteri|amma|appa|"
    "paati|thatha|ah ma|ah gong|mum|dad|mummy|daddy|mom|grandma|grandpa|uncle|"
    "aunty|sis|bro|baby|sayang"
)
_ROLES = _words(
    "cikgu|ustaz|ustazah|guru|guru besar|pengetua|teacher|coach|doktor|jurutera|"
    "polis|askar|bomba|pilot|chef|nurse|jururawat|peguam|usahawan|pengawas|"
    "ketua kelas|engineer|doctor|lawyer|artist|youtuber|gamer|footballer|arkitek|"
    "saintis|angkasawan"
)
_PET_NAMES = _words(
    "Oyen|Tompok|Comot|Comel|Putih|Bulat|Belang|Gebu|Manja|Si Manja|Si Putih|"
    "Si Comel|Si Belang|Tembam|Debab|Montel|Botak|Hitam|Kelabu|Oren|Bobo|Momo|Mochi|"
    "Kiki|Coco|Lucky|Max|Bella|Luna|Simba|Nala|Oreo|Milo|Snowy|Snowball|Tiger|"
    "Bobby|Brownie|Cookie|Pumpkin|Peanut|Ginger|Mimi|Didi|Lulu|Tom|Garfield|"
    "Bruno|Rocky|Buddy|Teddy|Shiro|Kuro|Panda|Bunny|Fluffy|Chiko|Meow|Cici|Gemok"
)
_ANIMALS_MS = _words(
    "kucing|arnab|ikan|ikan emas|ikan laga|burung|burung kakak tua|hamster|anjing|"
    "kura kura|ayam|itik|lembu|kambing|kuda|gajah|harimau|singa|monyet|panda|"
    "rusa|kancil|penyu|orang utan|beruang|zirafah|kucing parsi|kucing siam|"
    "kucing oren|anak kucing|anak ayam|rama rama|semut"
)
_ANIMALS_EN = _words(
    "cat|kitten|dog|puppy|rabbit|bunny|fish|goldfish|bird|parrot|hamster|turtle|"
    "chicken|duck|cow|goat|horse|elephant|tiger|lion|monkey|panda|deer|bear|"
    "giraffe|dinosaur|shark|whale|dolphin|unicorn|dragon|penguin|owl|butterfly"
)
_FOODS = _words(
    "nasi lemak|roti canai|roti tisu|roti telur|mee goreng|mee rebus|mee bandung|"
    "maggi goreng|laksa|laksa Penang|asam laksa|satay|satay Kajang|cendol|rendang|"
    "kuih lapis|kuih raya|kek batik|kek lapis Sarawak|durian|musang king|"
    "nasi kerabu|char kuey teow|char kway teow|ais kacang|ABC|pisang goreng|"
    "nasi dagang|nasi kandar|nasi ayam|chicken rice|nasi goreng kampung|"
    "nasi goreng|nasi briyani|nasi minyak|lontong|ketupat|lemang|rendang ayam|"
    "ayam goreng|ayam penyet|ikan bakar|sotong bakar|udang|ketam|sup tulang|"
    "sup ayam|tomyam|tom yam|bihun goreng|kuey teow|wantan mee|bak kut teh|"
    "dim sum|yong tau foo|chee cheong fun|thosai|tosai|capati|murukku|vadai|"
    "putu mayam|kuih muih|onde onde|apam balik|karipap|cucur udang|keropok lekor|"
    "nugget|burger|pizza|spaghetti|french fries|fries|sushi|ramen|kimchi|"
    "chocolate|coklat|ice cream|aiskrim|cake|cupcake|donut|biskut|cookies|"
    "popcorn|jelly|pudding|roti bakar|kaya toast|half boiled egg|telur separuh masak"
)
_DRINKS = _words(
    "teh tarik|teh o|teh o ais|teh ais|teh o ais limau|kopi|kopi o|kopi o kosong|"
    "kopi ais|milo|milo ais|milo panas|milo dinosaur|neslo|nescafe|sirap|"
    "sirap bandung|air bandung|air kelapa|air tebu|susu|susu soya|air limau|"
    "jus oren|jus epal|coke|coca cola|100 plus|bubble tea|boba|latte|matcha"
)
_FRUITS = _words(
    "durian|rambutan|manggis|mangga|pisang|betik|tembikai|nanas|jambu|cempedak|"
    "nangka|langsat|duku|epal|oren|anggur|strawberi|strawberry|limau|kelapa|"
    "ciku|salak|apple|orange|banana|mango|watermelon|grape|cherry|kiwi|avocado|"
    "dragon fruit|buah naga|longan|lychee|laici"
)
_FOOD_WORDS = _words(
    "sedap|pedas|manis|panas|sejuk|kaw|kurang manis|extra pedas|special|"
    "kegemaran|favourite|best|yummy|mamak|kampung|Mak|istimewa|cheese|"
    "goreng|bakar|rebus|kuah|sambal"
)
_PLACES = _words(
    "Johor|Johor Bahru|Kedah|Alor Setar|Kelantan|Kota Bharu|Melaka|"
    "Negeri Sembilan|Seremban|Pahang|Kuantan|Pulau Pinang|Penang|Georgetown|"
    "Perak|Ipoh|Perlis|Kangar|Sabah|Kota Kinabalu|Sarawak|Kuching|Selangor|"
    "Shah Alam|Terengganu|Kuala Terengganu|Kuala Lumpur|KL|Putrajaya|Labuan|"
    "Cyberjaya|Petaling Jaya|PJ|Subang|Subang Jaya|Klang|Kajang|Bangi|Gombak|"
    "Rawang|Sepang|Puchong|Cheras|Ampang|Setapak|Wangsa Maju|Bangsar|Sentul|"
    "Kepong|Bukit Bintang|Kampung Baru|Muar|Batu Pahat|Kluang|Segamat|"
    "Kota Tinggi|Pontian|Mersing|Taiping|Teluk Intan|Kuala Kangsar|Lumut|Sitiawan|"
    "Kampar|Butterworth|Bukit Mertajam|Sungai Petani|Kulim|Langkawi|Pendang|"
    "Jitra|Tumpat|Pasir Mas|Machang|Tanah Merah|Dungun|Kemaman|Marang|Besut|"
    "Temerloh|Bentong|Raub|Jerantut|Cameron Highlands|Genting|Bukit Fraser|"
    "Miri|Sibu|Bintulu|Limbang|Sri Aman|Sandakan|Tawau|Lahad Datu|Keningau|"
    "Ranau|Semporna|Port Dickson|Nilai|Rembau|Tampin|Jasin|Alor Gajah|Ayer Keroh|"
    "Pulau Redang|Pulau Tioman|Pulau Perhentian|Pulau Pangkor|Pulau Langkawi|"
    "Pantai Cenang|Batu Ferringhi|Tanjung Rhu|Gunung Kinabalu|Gunung Ledang|"
    "Tasik Kenyir|Sungai Perak|Menara KL|KLCC|Dataran Merdeka|Jonker Street|"
    "Mekah|Madinah|Makkah|Bandung|Jakarta|Bali|Singapura|Singapore|Bangkok|"
    "Hatyai|Tokyo|Seoul|London|Paris|Australia|Chennai|Beijing|Taipei"
)
_PLACE_WORDS = _words(
    "rumah|kampung|taman|jalan|bandar|pekan|pantai|pulau|bukit|gunung|sungai|"
    "tasik|sekolah|surau|masjid|kuil|tokong|gereja|pasar|pasar malam|kedai|"
    "kedai mamak|kopitiam|padang|taman permainan|home|village|school|beach|"
    "island|hill|river|lake|park|market|shop|corner|town|city"
)
_STREETS = _words(
    "Mawar|Melati|Melur|Kenanga|Cempaka|Orkid|Dahlia|Seri|Indah|Bahagia|Jaya|"
    "Harmoni|Impian|Permai|Sentosa|Merdeka|Utama|Baru|Lama|Damai|Setia|Desa|"
    "Bunga Raya|Teratai|Kemboja|Anggerik|Cahaya|Mutiara|Delima|Nilam"
)
_SCHOOL_TYPES = _words("SK|SMK|SJKC|SJKT|SRA|SMKA|MRSM|Sekolah Kebangsaan|Sekolah")
_CLASS_NAMES = _words(
    "Bestari|Cemerlang|Amanah|Gemilang|Bijak|Cerdik|Dedikasi|Jujur|Ikhlas|"
    "Harapan|Wawasan|Arif|Usaha|Maju|Mulia|Sains|Sastera|Alpha|Beta|Cekal|Tekun|"
    "Setia|Zamrud|Nilam|Delima|Intan|Mutiara"
)
_SCHOOL_WORDS = _words(
    "kelas|darjah|tahun|tingkatan|form|standard|class|batch|SPM|UPSR|PT3|STPM|"
    "matrik|diploma|degree|asrama|kelab|persatuan|pengakap|pandu puteri|"
    "kadet polis|bulan sabit merah|tadika|taska|prasekolah"
)
_HOBBIES_MS = _words(
    "bola sepak|badminton|membaca|baca buku|baca novel|memasak|masak|melukis|"
    "lukis|berenang|memancing|berkebun|main gitar|main piano|berbasikal|"
    "naik basikal|takraw|sepak takraw|catur|congkak|gasing|wau|main wau|silat|"
    "bersilat|menari|menyanyi|nyanyi|karaoke|mengaji|jahit|menjahit|tanam pokok|"
    "main game|main bola|jogging|hiking|mendaki|panjat bukit|bowling|futsal|"
    "bola jaring|bola tampar|ping pong|ragbi|tidur|makan|shopping|lepak|"
    "tengok wayang|tengok kartun|main layang layang|kayuh basikal"
)
_HOBBIES_EN = _words(
    "football|badminton|reading|cooking|drawing|painting|swimming|fishing|"
    "gardening|guitar|piano|cycling|chess|dancing|singing|karate|taekwondo|"
    "gaming|jogging|hiking|bowling|futsal|netball|volleyball|basketball|"
    "ping pong|rugby|sleeping|eating|shopping|baking|coding|photography|"
    "travelling|running|skating|music|anime|movies|cartoons"
)
_FANDOM = _words(
    "Upin Ipin|Upin|Ipin|Kak Ros|Opah|Ejen Ali|Boboiboy|Boboiboy Api|"
    "Mechamato|Didi and Friends|Omar Hana|Keluang Man|Doraemon|Nobita|Shin Chan|"
    "Pikachu|Pokemon|Naruto|Sasuke|Goku|Luffy|One Piece|Demon Slayer|Tanjiro|"
    "Spiderman|Spider Man|Batman|Superman|Iron Man|Captain America|Hulk|Thor|"
    "Avengers|Frozen|Elsa|Anna|Moana|Cinderella|Barbie|Hello Kitty|Mickey Mouse|"
    "Minions|Shrek|Toy Story|Cars|Lightning McQueen|Paw Patrol|Peppa Pig|"
    "Baby Shark|Cocomelon|Ultraman|Power Rangers|Transformers|Optimus Prime|"
    "Minecraft|Roblox|Fortnite|Free Fire|Mobile Legends|PUBG|Among Us|Lego|"
    "Mario|Sonic|Harry Potter|Hogwarts|Star Wars|Ninjago|BTS|Blackpink|Jungkook|"
    "Lisa|Taylor Swift|Ed Sheeran|Siti Nurhaliza|Dato Siti|P Ramlee|Sudirman|"
    "Yuna|Faizal Tahir|Lee Chong Wei|Lee Zii Jia|Nicol David|Pandelela|"
    "Azizulhasni|Messi|Ronaldo|CR7|Neymar|Mbappe|Haaland|Salah|Safawi|"
    "Harimau Malaya|JDT|Johor Darul Takzim|Selangor FC|Kedah FC|Kelantan FC|"
    "Terengganu FC|Perak FC|Sabah FC|Manchester United|Man United|Man City|"
    "Liverpool|Arsenal|Chelsea|Barcelona|Real Madrid|Juventus|Bayern|"
    "Proton|Perodua|Myvi|Axia|Saga|Honda|Yamaha|Iphone|Samsung|Nintendo|"
    "Playstation|Youtube|Tiktok|Netflix|Shopee|Aeon|Mydin|Tesco|KFC|McD|"
    "Marrybrown|Pizza Hut|Secret Recipe|Starbucks|Zus|Tealive|Mixue"
)
_COLOURS_MS = _words(
    "merah|biru|hijau|kuning|ungu|hitam|putih|oren|jingga|merah jambu|pink|"
    "kelabu|coklat|emas|perak|biru laut|hijau muda|biru muda"
)
_COLOURS_EN = _words(
    "red|blue|green|yellow|purple|black|white|orange|pink|grey|brown|gold|silver|"
    "navy blue|sky blue|light blue"
)
_ADJ_MS = _words(
    "comel|gemuk|garang|manja|nakal|kecil|besar|cantik|hebat|baik|pandai|rajin|"
    "bijak|kuat|berani|gebu|bulat|lawa|handsome|cun|sayang|kesayangan|tersayang|"
    "malas|lambat|laju|pemalu|periang|ceria|bahagia|gembira|sedih|lapar|sihat|"
    "terbaik|kacak|bertuah|solehah|soleh|tembam|montel|debab|hensem|kiut"
)
_ADJ_EN = _words(
    "cute|fat|little|big|small|happy|lucky|crazy|sweet|best|brave|smart|lazy|"
    "naughty|funny|pretty|cool|strong|fast|slow|clever|kind|lovely|fluffy|"
    "chubby|super|golden|tiny|sleepy|hungry|awesome|beautiful|handsome|sweetie"
)
_NOUNS_MS = _words(
    "rumah|kampung|sekolah|kelas|kereta|basikal|motor|bola|buku|bunga|bunga raya|"
    "bunga mawar|orkid|bintang|bulan|matahari|langit|pantai|laut|hujan|pelangi|"
    "angin|awan|pokok|pokok kelapa|daun|batu|kapal|kapal terbang|keretapi|"
    "payung|beg|kasut|baju|baju kurung|songkok|tudung|jam|cermin|kunci|lampu|"
    "pintu|tingkap|meja|kerusi|katil|bantal|selimut|telefon|komputer|laptop|"
    "radio|gitar|piano|gasing|wau|layang layang|kotak|surat|hadiah|duit|"
    "syiling|cincin|rantai|permata|mutiara|intan|emas|kawan|sahabat|jiran|"
    "keluarga|cinta|rindu|impian|harapan|cita cita|kenangan|rahsia|doa|syurga"
)
_NOUNS_EN = _words(
    "home|house|school|class|car|bike|bicycle|motorbike|ball|book|flower|rose|"
    "star|moon|sun|sky|beach|sea|ocean|rain|rainbow|wind|cloud|tree|leaf|stone|"
    "boat|ship|plane|train|umbrella|bag|shoes|watch|mirror|key|lamp|door|window|"
    "table|chair|bed|pillow|blanket|phone|computer|laptop|radio|guitar|piano|"
    "kite|box|letter|gift|present|money|coin|ring|necklace|diamond|pearl|gold|"
    "friend|best friend|neighbour|family|love|dream|hope|memory|secret|prayer|"
    "heaven|sunshine|princess|prince|king|queen|hero|angel|champion|legend|boss"
)
_MOTTOS = _words(
    "Alhamdulillah|Bismillah|InsyaAllah|Subhanallah|Masya Allah|Allahu Akbar|"
    "Assalamualaikum|Salam|Syukur|Redha|Tawakal|Sabar|Sabar itu indah|"
    "Jangan putus asa|Never give up|Malaysia Boleh|Saya boleh|I can do it|"
    "You can do it|Yes I can|Jom belajar|Rajin belajar|Belajar rajin|"
    "Ilmu pelita hidup|Kejayaan milik saya|Berusaha dan berjaya|Usaha tangga kejayaan|"
    "Hidup biasa biasa|Chill je|Relax la|Senyum selalu|Smile always|Keep smiling|"
    "Be happy|Stay strong|Stay positive|Be kind|Dream big|Just do it|Hakuna matata|"
    "Family first|Family is everything|Love my family|God is good|Jesus loves me|"
    "Om Namah Shivaya|Amitabha|Gong Xi Fa Cai|Selamat Hari Raya|Happy Deepavali|"
    "Merry Christmas|Happy birthday|Selamat pagi|Selamat malam|Good morning|"
    "Good night|Mimpi indah|Sweet dreams|Hello world|Hai semua|Hello|Hi there|"
    "Rukun Negara|Negaraku|Jalur Gemilang|Merdeka|Satu Malaysia|Sayangi Malaysia|"
    "Kasih ibu|Syurga di bawah telapak kaki ibu|Anak soleh|Anak solehah|"
    "Kawan selamanya|Best friends forever|BFF|Sahabat dunia akhirat|Cinta hati|"
    "Buah hati|Permata hati|Cahaya mata|Pengarang jantung|Rindu kampung|"
    "Balik kampung|Cuti sekolah|Hari Raya|Raya di kampung|Tahun baru|Hari jadi"
)
_MONTHS_MS = _words(
    "Januari|Februari|Mac|April|Mei|Jun|Julai|Ogos|September|Oktober|November|Disember"
)
_MONTHS_EN = _words(
    "January|February|March|April|May|June|July|August|September|October|"
    "November|December|Jan|Feb|Mar|Apr|Aug|Sept|Oct|Nov|Dec"
)
_DAYS = _words(
    "Isnin|Selasa|Rabu|Khamis|Jumaat|Sabtu|Ahad|Monday|Tuesday|Wednesday|"
    "Thursday|Friday|Saturday|Sunday"
)
_LUCKY = _words("7|8|9|10|13|21|23|88|99|100|123|168|777|888|999|1234|12345|2468")
# Everyday words beyond the classes above, so that the words people really
# use mostly lie inside what the generator could write: a phrase holding a
# word no decoy can hold would be known to be real.
_EVERYDAY_MS = _words(
    "main|makan|minum|tidur|baca|tulis|lari|jalan|duduk|tengok|dengar|cakap|"
    "pergi|balik|datang|masak|basuh|kemas|beli|jual|belajar|mengajar|kerja|"
    "bermain|berlari|menulis|membeli|menangis|ketawa|senyum|sayang|rindu|suka|"
    "benci|marah|takut|malu|penat|rajin|pandai|bodoh|besar|kecil|tinggi|rendah|"
    "panjang|pendek|lebar|tebal|nipis|berat|ringan|baru|lama|muda|tua|cepat|"
    "lambat|jauh|dekat|banyak|sikit|sedikit|semua|setiap|selalu|kadang|pernah|"
    "belum|sudah|masih|akan|boleh|mahu|nak|perlu|mesti|jangan|tak|bukan|ya|"
    "paling|sangat|amat|sekali|lagi|juga|pun|je|lah|kan|tu|ni|ini|itu|sini|"
    "sana|atas|bawah|dalam|luar|depan|belakang|tepi|tengah|pagi|tengah hari|"
    "petang|malam|siang|hari|minggu|bulan|tahun|esok|semalam|sekarang|dulu|"
    "nanti|pertama|kedua|ketiga|akhir|satu|dua|tiga|empat|lima|enam|tujuh|"
    "lapan|sembilan|sepuluh|seratus|ribu|juta|orang|budak|kanak kanak|lelaki|"
    "perempuan|jantan|betina|sulung|bongsu|tengah|kembar|saudara|sepupu|kawan baik|"
    "geng|kumpulan|pasukan|juara|hadiah|markah|peperiksaan|cuti|raya|perayaan|"
    "majlis|kenduri|kahwin|jalan jalan|percutian|lawatan|rombongan|kem|"
    "lagu|muzik|filem|cerita|kartun|komik|novel|majalah|gambar|lukisan|warna|"
    "bentuk|bulat|segi|hati|jantung|tangan|kaki|mata|rambut|muka|badan|bulu|"
    "ekor|telinga|gigi|suara|nama|nombor|angka|huruf|kata|ayat|bahasa|ilmu|"
    "sains|matematik|sejarah|geografi|seni|sukan|kesihatan|agama|doa|solat|"
    "puasa|zakat|masjid|kubur|syurga|dunia|akhirat|bumi|alam|hutan|pokok|"
    "buah|sayur|nasi|roti|mee|kuih|air|susu|gula|garam|minyak|telur|daging|"
    "ikan|ayam|udang|sotong|kek|gula gula|coklat|lebat|renyai|panas terik|"
    "sejuk|nyaman|indah|cantik|hodoh|bersih|kotor|kemas|sunyi|bising|ramai|"
    "sepi|gelap|terang|kuat|lemah|sihat|sakit|kaya|miskin|murah|mahal|"
    "wangi|busuk|manis|masam|masin|pahit|pedas|lembut|keras|licin|gemuk|kurus|"
    "ganas|jinak|liar|garang|baik hati|jahat|nakal|degil|comel|lucu|kelakar"
)
_EVERYDAY_EN = _words(
    "play|eat|drink|sleep|read|write|run|walk|sit|watch|listen|talk|go|come|"
    "cook|wash|clean|buy|sell|learn|teach|work|cry|laugh|smile|love|miss|like|"
    "hate|angry|scared|shy|tired|big|small|tall|short|long|wide|thick|thin|"
    "heavy|light|new|old|young|fast|slow|far|near|many|few|all|every|always|"
    "never|sometimes|already|still|will|can|want|need|must|don't|not|yes|no|"
    "very|really|so|too|also|again|here|there|up|down|in|out|inside|outside|"
    "morning|afternoon|evening|night|day|week|month|year|today|tomorrow|"
    "yesterday|now|first|second|third|last|one|two|three|four|five|six|seven|"
    "eight|nine|ten|hundred|thousand|million|people|boy|girl|man|woman|kid|kids|"
    "baby|twins|cousin|team|group|gang|club|champion|prize|exam|holiday|trip|"
    "camp|party|wedding|song|music|movie|story|cartoon|comic|novel|picture|"
    "colour|color|shape|heart|hand|foot|eye|hair|face|tail|voice|name|number|"
    "word|language|science|maths|history|art|sport|sports|health|world|earth|"
    "nature|forest|garden|fruit|vegetable|rice|bread|noodles|water|milk|sugar|"
    "egg|meat|chicken|beef|cake|candy|sweets|beautiful|ugly|clean|dirty|quiet|"
    "noisy|dark|bright|strong|weak|healthy|sick|rich|poor|cheap|expensive|soft|"
    "hard|black belt|forever|together|only|just|my|your|our|his|her|the|a|an|"
    "of|in|on|at|to|from|with|and|or|but|is|am|are|was|i|me|we|you|she|he|it|they"
)
_EVERYDAY_SHAPES = _words(
    "{everyday_ms} {everyday_ms}|{noun_ms} {everyday_ms}|{everyday_ms} {name}|"
    "{kin} {everyday_ms}|{pet} {everyday_ms}|{everyday_ms} {everyday_ms} {everyday_ms}|"
    "{everyday_en} {everyday_en}|{noun_en} {everyday_en}|{everyday_en} {noun_en}|"
    "{everyday_en} {everyday_en} {everyday_en}|saya {everyday_ms} {noun_ms}|"
    "I {everyday_en} {noun_en}|{everyday_ms} {place}|{everyday_en} {place}|"
    "{food} {everyday_ms}|{everyday_ms} {year}|{everyday_ms} {number}"
)

# Shapes of phrases in four groups; a group is drawn by its weight (out of
# 100), then a shape in it, each as likely as the next. {slot}s are filled
# from the word classes above. Most people write one thing or two or three
# words about it; fewer add a number or write a sentence.
_SHAPES = (
    (
        17,  # One thing.
        _words(
            "{name}|{name}|{fullname}|{fullname}|{pet}|{pet}|{food}|{food}|{place}|"
            "{place}|{fan}|{fan}|{motto}|{motto}|{motto}|{noun_ms}|{noun_en}|{school}|"
            "{drink}|{fruit}|{hobby_ms}|{hobby_en}|{colour_ms}|{colour_en}|{class}"
        ),
    ),
    (
        34,  # Two or three words about it.
        _words(
            "{role} {name}|{kin} {name}|{kin} {name}|"
            "{animal_ms} {adj_ms}|{animal_ms} {colour_ms}|{adj_en} {animal_en}|"
            "{pet} {adj_ms}|{pet} {adj_en}|{pet} {pet}|{kin} {adj_ms}|{adj_en} {kin}|"
            "{noun_ms} {adj_ms}|{adj_en} {noun_en}|{noun_ms} {colour_ms}|"
            "{colour_en} {noun_en}|{food} {food_word}|{food} {place}|"
            "{drink} {food_word}|{fruit} {colour_ms}|{place_word} {place}|"
            "{place_word} {street}|{place_word} {kin}|{noun_ms} {kin}|{kin} {place}|"
            "{name} {place}|{fan} {adj_en}|{role} {adj_ms}|{animal_ms} {kin}|"
            "{animal_ms} {name}|{animal_en} {pet}|{name} {adj_ms}|{name} {adj_en}|"
            "{kin} {kin}|{pet} {kin}|{noun_ms} {name}|{name} {fan}|{fan} {name}|"
            "{food} {kin}|{word_ms} {word_ms}|{word_en} {word_en}|{motto} {kin}|"
            "{motto} {name}|{kin} {role}|{role} {place}|{name} {name}"
        ),
    ),
    (
        8,  # With a number.
        _words(
            "{name} {year}|{name} {year}|{pet} {year}|{place} {year}|{fan} {number}|"
            "{name} {number}|{noun_ms} {number}|{noun_en} {number}|"
            "{school_word} {year}|{motto} {year}|{food} {number}|{kin} {number}|"
            "{place} {number}|{word_ms} {number}|{animal_ms} {number}|{day_month}|"
            "{day_month} {year}|born {year}|sejak {year}|tahun {year}|kahwin {year}|"
            "rumah no {small}|no {small} {street}|jalan {street} {small}|"
            "{kin} {name} {year}|{school} {year}|{class} {year}|lahir {day_month}|"
            "{year}|{number}"
        ),
    ),
    (
        14,  # Everyday words, the long tail of what people write.
        _EVERYDAY_SHAPES,
    ),
    (
        24,  # A sentence or half of one.
        _words(
            "saya suka {food}|saya suka {hobby_ms}|saya {name}|"
            "aku {name}|I love {food}|I love {kin}|I love {fan}|"
            "I like {hobby_en}|love {hobby_en}|my {animal_en} {pet}|my {kin} {name}|"
            "my {noun_en}|{animal_ms} saya {pet}|{animal_ms} saya {adj_ms}|"
            "{pet} si {animal_ms}|{name} suka {food}|"
            "{kin} suka {food}|{kin} masak {food}|"
            "{kin} sayang {kin}|{name} sayang {kin}|sayang {kin}|love you {kin}|"
            "{kin} and {kin}|{name} dan {name}|{name} & {name}|{name} and {pet}|"
            "{pet} dan {pet}|rumah {kin} di {place}|rumah di {place}|cuti di {place}|"
            "holiday in {place}|trip to {place}|balik kampung {place}|"
            "raya di {place}|lahir di {place}|born in {place}|nak jadi {role}|"
            "cita cita {role}|future {role}|saya {role}|{kin} saya {role}|"
            "{name} the {adj_en}|{pet} the {animal_en}|taman {street}|"
            "{hobby_ms} setiap {day}|{hobby_en} on {day}|{hobby_ms} dengan {kin}|"
            "{food} dan {drink}|{food} with {drink}|{noun_ms} di {place}|"
            "{noun_en} of {place}|{adj_ms} macam {animal_ms}"
        ),
    ),
)

# Chat spellings people use in a phrase they type often.
_SHORT = {
    "saya": ("sy", "saye"),
    "yang": ("yg",),
    "dengan": ("dgn",),
    "sayang": ("syg", "sayangg"),
    "tidak": ("x", "tak"),
    "nak": ("nk",),
    "you": ("u",),
    "love": ("luv", "lurve"),
    "kampung": ("kg",),
    "jalan": ("jln",),
    "taman": ("tmn",),
    "and": ("n", "&"),
    "dan": ("&", "n"),
    "the": ("da",),
    "my": ("mah",),
    "jangan": ("jgn",),
    "kerja": ("keje", "kije"),
    "apa": ("ape", "apo"),
    "tahu": ("tau",),
    "sudah": ("dah", "sdh"),
    "lagi": ("lg", "lagik"),
    "untuk": ("utk",),
    "boleh": ("blh", "leh"),
    "sangat": ("sgt",),
    "kakak": ("kak", "kakak2"),
    "adik": ("adk", "adikk"),
    "mama": ("mamaa", "mummy"),
    "best": ("besh", "bestt"),
    "suka": ("suke", "sukaa"),
    "for": ("4",),
    "to": ("2",),
    "forever": ("4ever",),
    "great": ("gr8",),
}
# Marks people add to a phrase on a phone: a heart, a face, a cat, a ball.
_MARKS = ("\u2764", "\U0001f60a", "\U0001f431", "\u26bd", "\u2b50", "\U0001f338")


class _Draws:
    """Choices read from HMAC-SHA256(key, seed || counter): stable forever."""

    def __init__(self, key: bytes, seed: bytes) -> None:
        self._key = key
        self._seed = seed
        self._counter = 0
        self._pool = b""

    def below(self, n: int) -> int:
        """An integer in ``[0, n)``; 64 bits each, so the bias is negligible."""
        while len(self._pool) < 8:
            block = self._counter.to_bytes(8, "big")
            self._pool += hmac.new(
                self._key, self._seed + block, hashlib.sha256
            ).digest()
            self._counter += 1
        number, self._pool = int.from_bytes(self._pool[:8], "big"), self._pool[8:]
        return number % n

    def pick(self, items):
        return items[self.below(len(items))]

    def chance(self, percent: int) -> bool:
        return self.below(100) < percent


# Words no list here holds. Real phrases are full of them: a grandmother's
# kampung, a dish from one state, a cat's nickname, a chat spelling. If every
# decoy word came from the lists above, "a word the source cannot write means
# real" would tell most registered numbers (AUTH-26). So some decoy words are
# new, drawn letter by letter from character models of the lists above
# (names, Malay, English): plausible words, any of which a real person might
# have written. Every letter string is possible (a model that meets an
# unseen context falls back to shorter ones, down to any letter or digit),
# so no word proves a phrase real; only likelihood can, and the models keep
# that close to real words'.
_MODEL_ORDER = 3
WORD_LENGTHS = (2, 14)
_WORD_MIN, _WORD_MAX = WORD_LENGTHS
# The letters a fall-back may write. Digits are for chat spellings ("2u").
WORD_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_END = "$"
# Per mille of new words kept, by length: a model of letters runs on, and
# real phrases' unlisted words are short (mostly 4-6 letters, few past 9).
_KEEP_LENGTH = {3: 650, 7: 700, 8: 550, 9: 550, 10: 450, 11: 300, 12: 250, 13: 200}
# Per mille: how often a draw leaves a context for the next shorter one;
# and, when every context gave way, how often any letter of the alphabet
# comes instead of the commonest ones.
_BACK_OFF = 60
_ANY_LETTER = 250

# No decoy may offend whoever is shown it. A generated word that is one of
# the first or holds one of the second (Malay and English profanity, slurs,
# body and sex words) is drawn again; short ones must match whole, or
# "kelass" would go.
_BLOCKED_WHOLE = frozenset(
    _words(
        "ass|arse|anus|babi|bodo|bodoh|bangang|bengap|bitch|butt|cibai|cock|"
        "crap|cum|damn|dick|dumb|fag|gay|god|hell|homo|jubo|kote|lahanat|"
        "lancau|nigga|negro|paki|pepek|puki|sial|slut|tits|tolol|twat|jalang|"
        "keling|kafir|kimak|lanjiao|lesbo|pondan|pussy|rape|sex|sexy|shit|"
        "spastic|tetek|whore|celaka|haram|mampus|setan|syaitan|iblis"
    )
)
_BLOCKED_PART = _words(
    "fuck|fck|shit|cunt|bitch|puki|pukimak|kimak|cibai|pantat|butoh|konek|"
    "pelacur|sundal|nigg|fagg|whore|lancau|lanjiao|bangsat|keparat|jahanam|"
    "porn|penis|vagina|kontol|"
    "rogol|rape|sexy|dildo|bastard|wank|slut|boob|tetek|babi|retard|haram"
)


def _offends(word: str) -> bool:
    word = word.lower()
    return word in _BLOCKED_WHOLE or any(part in word for part in _BLOCKED_PART)


class _Letters:
    """A character model of one family of words, sampled from a draw stream."""

    def __init__(self, *lists: tuple[str, ...]) -> None:
        counts: dict[str, dict[str, int]] = {}
        self.words = frozenset(
            token.lower()
            for items in lists
            for entry in items
            for token in entry.split()
        )
        # Sorted: the tables' order fixes every decoy, so it must not follow
        # the process's hash seed.
        for word in sorted(
            {
                word
                for word in self.words
                if word.isalpha() and word.isascii() and len(word) >= _WORD_MIN
            }
        ):
            text = "^" * _MODEL_ORDER + word + _END
            for i in range(_MODEL_ORDER, len(text)):
                for order in range(_MODEL_ORDER + 1):
                    context = text[i - order : i]
                    following = counts.setdefault(context, {})
                    following[text[i]] = following.get(text[i], 0) + 1
        # Each context's next letters as a cumulative table, for one draw each.
        self._tables = {
            context: (tuple(following), tuple(_running(following.values())))
            for context, following in counts.items()
        }

    def _next(self, draw: _Draws, history: str) -> str:
        for order in range(_MODEL_ORDER, -1, -1):
            table = self._tables.get(history[len(history) - order :] if order else "")
            if table is None or draw.below(1000) < _BACK_OFF:
                continue
            letters, running = table
            return letters[bisect.bisect_right(running, draw.below(running[-1]))]
        # Every context gave way: any letter at all, or the commonest ones.
        if draw.below(1000) < _ANY_LETTER:
            return draw.pick(WORD_ALPHABET)
        letters, running = self._tables[""]
        return letters[bisect.bisect_right(running, draw.below(running[-1]))]

    def word(self, draw: _Draws) -> str:
        """A new word, 2-14 letters, no offence in it (bounded redraws)."""
        for _ in range(20):
            history, letters = "^" * _MODEL_ORDER, list[str]()
            while len(letters) <= _WORD_MAX:
                letter = self._next(draw, history)
                if letter == _END:
                    break
                letters.append(letter)
                history = history[1:] + letter
            word = "".join(letters)
            if (
                _WORD_MIN <= len(word) <= _WORD_MAX
                and draw.below(1000)
                < _KEEP_LENGTH.get(len(word), 200 if len(word) > 13 else 1000)
                and not _offends(word)
            ):
                return word
        return draw.pick(_NOUNS_MS)


def _running(values) -> list[int]:
    total, out = 0, []
    for value in values:
        total += value
        out.append(total)
    return out


_NAME_LETTERS = _Letters(
    _MALAY_NAMES,
    _CHINESE_NAMES,
    _CHINESE_SURNAMES,
    _INDIAN_NAMES,
    _OTHER_NAMES,
    _PET_NAMES,
)
_MALAY_LETTERS = _Letters(
    _KIN,
    _ROLES,
    _ANIMALS_MS,
    _FOODS,
    _DRINKS,
    _FRUITS,
    _FOOD_WORDS,
    _PLACES,
    _PLACE_WORDS,
    _STREETS,
    _CLASS_NAMES,
    _HOBBIES_MS,
    _COLOURS_MS,
    _ADJ_MS,
    _NOUNS_MS,
    _MOTTOS,
    _EVERYDAY_MS,
)
_ENGLISH_LETTERS = _Letters(
    _ANIMALS_EN,
    _HOBBIES_EN,
    _COLOURS_EN,
    _ADJ_EN,
    _NOUNS_EN,
    _FANDOM,
    _EVERYDAY_EN,
)
# Words the lists hold, checked by hand ("Semporna" has a blocked part).
_LISTED = _NAME_LETTERS.words | _MALAY_LETTERS.words | _ENGLISH_LETTERS.words


def _made_name(draw: _Draws) -> str:
    """A name no list holds, as many real names are to a word list."""
    return _NAME_LETTERS.word(draw).capitalize()


def _pet_name(draw: _Draws) -> str:
    if draw.chance(75):
        return draw.pick(_PET_NAMES)
    return _made_name(draw)


def _name(draw: _Draws) -> str:
    community = draw.below(100)
    if draw.chance(30) and community < 85:
        return _made_name(draw)
    if community < 45:
        return draw.pick(_MALAY_NAMES)
    if community < 65:
        given = draw.pick(_CHINESE_NAMES)
        return f"{draw.pick(_CHINESE_SURNAMES)} {given}" if draw.chance(30) else given
    if community < 85:
        return draw.pick(_INDIAN_NAMES)
    return draw.pick(_OTHER_NAMES)


def _full_name(draw: _Draws) -> str:
    community = draw.below(100)
    if community < 50:
        first = draw.pick(("Muhammad", "Nur", "Nurul", "Siti", "Wan", "Nik", "Ahmad"))
        second = draw.pick(_MALAY_NAMES)
        return (
            f"{first} {second}"
            if draw.chance(50)
            else f"{second} {draw.pick(_MALAY_NAMES)}"
        )
    if community < 75:
        return f"{draw.pick(_CHINESE_SURNAMES)} {draw.pick(_CHINESE_NAMES)}"
    if community < 90:
        return f"{draw.pick(_INDIAN_NAMES)} {draw.pick(_INDIAN_NAMES)}"
    return f"{draw.pick(_OTHER_NAMES)} {draw.pick(_CHINESE_SURNAMES + _OTHER_NAMES)}"


def _year(draw: _Draws) -> str:
    # Pupils' birth years, parents' and teachers', then anything recent.
    band = draw.below(100)
    if band < 45:
        return str(2005 + draw.below(21))
    if band < 85:
        return str(1965 + draw.below(35))
    return str(1957 + draw.below(70))


def _number(draw: _Draws) -> str:
    kind = draw.below(100)
    if kind < 40:
        return draw.pick(_LUCKY)
    if kind < 80:
        return str(1 + draw.below(30))
    return str(30 + draw.below(970))


def _day_month(draw: _Draws) -> str:
    day = 1 + draw.below(28)
    style = draw.below(100)
    if style < 45:
        return f"{day} {draw.pick(_MONTHS_MS)}"
    if style < 80:
        return f"{day} {draw.pick(_MONTHS_EN)}"
    return f"{day}/{1 + draw.below(12)}"


def _school(draw: _Draws) -> str:
    kind = draw.pick(_SCHOOL_TYPES)
    place = draw.pick(
        (
            f"Taman {draw.pick(_STREETS)}",
            f"Bandar {draw.pick(_STREETS)}",
            f"Seri {draw.pick(_STREETS)}",
            draw.pick(_PLACES),
            draw.pick(_STREETS),
            f"Jalan {draw.pick(_STREETS)}",
        )
    )
    return f"{kind} {place}"


def _class(draw: _Draws) -> str:
    word = draw.pick(
        ("Kelas", "Tahun", "Darjah", "Tingkatan", "Form", "kelas", "tahun")
    )
    return f"{word} {1 + draw.below(6)} {draw.pick(_CLASS_NAMES)}"


_SLOTS = {
    "name": _name,
    "fullname": _full_name,
    "kin": lambda d: d.pick(_KIN),
    "role": lambda d: d.pick(_ROLES),
    "pet": _pet_name,
    "animal_ms": lambda d: d.pick(_ANIMALS_MS),
    "animal_en": lambda d: d.pick(_ANIMALS_EN),
    "food": lambda d: d.pick(_FOODS),
    "drink": lambda d: d.pick(_DRINKS),
    "fruit": lambda d: d.pick(_FRUITS),
    "food_word": lambda d: d.pick(_FOOD_WORDS),
    "place": lambda d: d.pick(_PLACES),
    "place_word": lambda d: d.pick(_PLACE_WORDS),
    "street": lambda d: d.pick(_STREETS),
    "school": _school,
    "school_word": lambda d: d.pick(_SCHOOL_WORDS),
    "class": _class,
    "hobby_ms": lambda d: d.pick(_HOBBIES_MS),
    "hobby_en": lambda d: d.pick(_HOBBIES_EN),
    "fan": lambda d: d.pick(_FANDOM),
    "colour_ms": lambda d: d.pick(_COLOURS_MS),
    "colour_en": lambda d: d.pick(_COLOURS_EN),
    "adj_ms": lambda d: d.pick(_ADJ_MS),
    "adj_en": lambda d: d.pick(_ADJ_EN),
    "noun_ms": lambda d: d.pick(_NOUNS_MS),
    "noun_en": lambda d: d.pick(_NOUNS_EN),
    "word_ms": lambda d: d.pick(_NOUNS_MS + _ADJ_MS + _ANIMALS_MS + _HOBBIES_MS),
    "word_en": lambda d: d.pick(_NOUNS_EN + _ADJ_EN + _ANIMALS_EN + _HOBBIES_EN),
    "motto": lambda d: d.pick(_MOTTOS),
    "day": lambda d: d.pick(_DAYS),
    "day_month": _day_month,
    "year": _year,
    "number": _number,
    "small": lambda d: str(1 + d.below(120)),
    "everyday_ms": lambda d: d.pick(_EVERYDAY_MS),
    "everyday_en": lambda d: d.pick(_EVERYDAY_EN),
}


# Which character model writes a new word in each slot's place.
_FAMILIES = {
    **dict.fromkeys(("name", "fullname", "pet"), _NAME_LETTERS),
    **dict.fromkeys(
        (
            "animal_en",
            "hobby_en",
            "fan",
            "colour_en",
            "adj_en",
            "noun_en",
            "word_en",
            "everyday_en",
        ),
        _ENGLISH_LETTERS,
    ),
}
# Slots whose words stay as drawn: numbers, dates, one-letter spellings.
_KEPT = frozenset(("year", "number", "small", "day_month", "day"))
# Real phrases are either about something generic ("kucing comel") or about
# something particular to their writer, and then often hold several words no
# list has ("Mek Yam", "rumah atok di Jasin"). So a share of decoys is
# particular (per mille), and in those each slot's words are new at a rate.
PARTICULAR_PER_MILLE = 700
_NOVEL_SLOT = 85  # per cent of a particular phrase's slots with new words
_NOVEL_WORD = 45  # per cent of such a slot's further words that are new too


def _novel(draw: _Draws, slot: str, value: str) -> str:
    """``value`` with some of its words swapped for new ones, cased as they were."""
    words = value.split()
    spots = [i for i, word in enumerate(words) if word.isalpha()]
    if slot in _KEPT or not spots:
        return value
    first = draw.pick(spots)
    family = _FAMILIES.get(slot, _MALAY_LETTERS)
    for spot in spots:
        if spot != first and not draw.chance(_NOVEL_WORD):
            continue
        new, old = family.word(draw), words[spot]
        words[spot] = (
            new.upper()
            if old.isupper() and len(old) > 1
            else new.capitalize()
            if old[:1].isupper()
            else new
        )
    return " ".join(words)


def _fill(draw: _Draws, shape: str) -> str:
    particular = draw.below(1000) < PARTICULAR_PER_MILLE
    out, rest = [], shape
    while "{" in rest:
        before, _, rest = rest.partition("{")
        slot, _, rest = rest.partition("}")
        out.append(before)
        value = _SLOTS[slot](draw)
        if particular and draw.chance(_NOVEL_SLOT):
            value = _novel(draw, slot, value)
        out.append(value)
    out.append(rest)
    return "".join(out)


def _shape(draw: _Draws) -> str:
    weight = draw.below(sum(weight for weight, _ in _SHAPES))
    for group_weight, shapes in _SHAPES:
        if weight < group_weight:
            return draw.pick(shapes)
        weight -= group_weight
    raise AssertionError("weights cover every draw")


def _styled(draw: _Draws, text: str) -> str:
    """``text`` in one of the ways people type: case, chat spelling, a mark."""
    words = text.split()
    if draw.chance(6):
        words = [
            draw.pick(_SHORT[w.lower()])
            if w.lower() in _SHORT and draw.chance(60)
            else w
            for w in words
        ]
    style = draw.below(1000)
    if style < 360:  # Title Case
        words = [w[:1].upper() + w[1:] for w in words]
    elif style < 640:  # Sentence case
        words = [w.lower() for w in words]
        words[0] = words[0][:1].upper() + words[0][1:]
    elif style < 740:  # as it came: proper nouns capitalised, the rest not
        words[0] = words[0][:1].upper() + words[0][1:]
    elif style < 815:  # capitals where the writer felt like it
        words = [w[:1].upper() + w[1:] if draw.chance(50) else w for w in words]
    elif style < 985:  # all lower case, as on a phone
        words = [w.lower() for w in words]
    else:  # SHOUTING
        words = [w.upper() for w in words]
    quirk = draw.below(1000)
    if quirk < 25 and len(words) > 1:  # two words run together
        at = draw.below(len(words) - 1)
        words[at : at + 2] = [words[at] + words[at + 1].lower()]
    elif quirk < 50:  # a slip of the finger: a letter doubled, lost or swapped
        at = draw.below(len(words))
        words[at] = _slip(draw, words[at])
    phrase = " ".join(words)
    mark = draw.below(1000)
    if mark < 10:
        phrase += "!"
    elif mark < 14:
        phrase += "."
    elif mark < 22:
        emoji = draw.pick(_MARKS)
        phrase = f"{phrase} {emoji}" if draw.chance(70) else f"{emoji} {phrase} {emoji}"
    return phrase


def _slip(draw: _Draws, word: str) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    at = 1 + draw.below(len(word) - 2)
    kind = draw.below(3)
    if kind == 0:
        return word[:at] + word[at] + word[at:]
    if kind == 1:
        return word[:at] + word[at + 1 :]
    return word[:at] + word[at + 1] + word[at] + word[at + 2 :]


def phrase_from(draw: _Draws) -> str:
    """One human-like phrase, valid for the phrase rules, from ``draw``."""
    for _ in range(50):
        phrase = " ".join(_styled(draw, _fill(draw, _shape(draw))).split())
        # A slip or a run-together pair can make what no new word may be.
        clean = not any(
            _offends(word)
            for word in re.findall(r"\w+", phrase.lower())
            if word not in _LISTED
        )
        if clean and PHRASE_MIN <= len(phrase) <= PHRASE_MAX:
            return phrase
    # Fifty draws outside 3-40 characters cannot happen with these lists;
    # a name is the safe answer if they ever change.
    return draw.pick(_MALAY_NAMES) + " " + _year(draw)


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"idp decoy v3", hashlib.sha256).digest()


# Per cent of decoys whose phrase names a pictured thing ("kucing saya
# oyen") that show that picture. People who write about their cat often
# choose the cat, so a uniform image would make "phrase and picture agree"
# a sign of a real user; no data says how often, so this is a middle guess
# that makes agreement weak evidence either way (uniform gives 1 in 66).
IMAGE_MATCH_PERCENT = 35


def _named_images(phrase: str) -> list[SecurityImage]:
    """The pictures whose Malay or English name is among ``phrase``'s words."""
    text = f" {' '.join(re.findall(r'[a-z]+', phrase.lower()))} "
    return [
        image
        for image in security_images.CATALOGUE
        if any(
            f" {' '.join(re.findall(r'[a-z]+', name))} " in text
            for name in (image.name_ms, image.name_en)
        )
    ]


def decoy(secret: str, identifier: str) -> tuple[SecurityImage, str]:
    """The decoy image and phrase for ``identifier`` (its normalised value)."""
    draw = _Draws(_key(secret), identifier.encode())
    phrase = phrase_from(draw)
    named = _named_images(phrase)
    if named and draw.chance(IMAGE_MATCH_PERCENT):
        return draw.pick(named), phrase
    return draw.pick(security_images.CATALOGUE), phrase


def suggestion() -> str:
    """A fresh phrase to offer someone choosing theirs, from the decoy generator."""
    return phrase_from(_Draws(secrets.token_bytes(32), b"suggestion"))


def shown_for(secret: str, identifier: str, user) -> tuple[SecurityImage, str]:
    """What the identifier step shows for ``identifier``: real or decoy.

    A user without a chosen image or phrase (created by an operator, who
    chooses them at first sign-in) sees their decoy until then: showing
    nothing would tell everyone the number is registered.
    """
    fake_image, fake_phrase = decoy(secret, identifier)
    if user is None:
        return fake_image, fake_phrase
    image = security_images.get(user.security_image or "") or fake_image
    return image, user.security_phrase or fake_phrase


def count_lookup(limiter, address: str | None) -> bool:
    """Count one identifier lookup from ``address``; True if every limit allows it.

    Every limiter is hit, allowed or not, so a harvest that keeps going past a
    limit keeps its counts high instead of letting them drain. The answer
    does not depend on the number looked up, so it cannot tell registered
    numbers apart.
    """
    decisions = [limiter.hit(name, key(address or "")) for name, key in LOOKUP_LIMITS]
    return all(decision.allowed for decision in decisions)


def lookups_exhausted(limiter, address: str | None) -> bool:
    """True if the next lookup from ``address`` would be past a limit (no count)."""
    return any(
        not limiter.check(name, key(address or "")).allowed
        for name, key in LOOKUP_LIMITS
    )
