"""Realistic values for the schema set's instances (bench/schemas/gen.py): names, places,
sentences and identifiers in several languages, chosen by the property they fill.

Every generator takes a random.Random, so the set is the same on every run."""

FIRST = ["Alice", "José", "Zoë", "Łukasz", "Ngozi", "Søren", "François", "Ayşe", "Mateo",
         "Priya", "Hiroshi", "Chloé", "Björn", "Amara", "Dmitri", "Fatima", "Liam", "Mei",
         "Olusegun", "Renée", "Tomás", "Yuki", "Anaïs", "Kwame", "Ingrid", "Rafael", "Sofía"]
LAST = ["García", "Müller", "Nguyen", "Kowalski", "Okafor", "Johansson", "Dubois", "Yılmaz",
        "Rossi", "Sharma", "Tanaka", "Lefèvre", "Andersson", "Mensah", "Ivanova", "Haddad",
        "O'Brien", "Chen", "Adeyemi", "Núñez", "Suzuki", "Brontë", "Schröder", "Smith"]
CJK_NAMES = ["王芳", "李伟", "佐藤 花子", "김민준", "陈静", "山田 太郎"]
CITIES = [("Lisbon", "PT"), ("São Paulo", "BR"), ("Zürich", "CH"), ("Kraków", "PL"),
          ("東京", "JP"), ("Reykjavík", "IS"), ("Ciudad de México", "MX"), ("Montréal", "CA"),
          ("Berlin", "DE"), ("Lagos", "NG"), ("Seattle", "US"), ("Malmö", "SE"),
          ("İstanbul", "TR"), ("Bengaluru", "IN"), ("Paris", "FR"), ("서울", "KR"),
          ("Austin", "US"), ("Chicago", "US")]
STREETS = ["Rua Augusta", "Bahnhofstrasse", "ulica Floriańska", "Main Street", "Calle de Alcalá",
           "Rue de Rivoli", "Königsallee", "Elm Avenue", "Laugavegur", "Queen Street West"]
COMPANIES = ["Acme Corp", "Nordlicht GmbH", "Café Lumière SARL", "Globex Ltd", "Initech",
             "株式会社ミライ", "Soylent Foods", "Umbrella Logistics", "Tyrell Systems"]
DOMAINS = ["example.com", "mail.example.org", "acme.test", "corp.example.net"]
PRODUCTS = ["Wireless Noise-Cancelling Headphones", "Stainless Steel Water Bottle (750 ml)",
            "Ergonomic Office Chair", "Organic Matcha Powder 抹茶", "Trail Running Shoes",
            "4K USB-C Monitor 27\"", "Cast-Iron Skillet", "Crème Brûlée Torch",
            "Mechanical Keyboard — Brown Switches", "Bamboo Cutting Board Set"]
CATEGORY_WORDS = ["electronics", "kitchen", "outdoor", "books", "apparel", "beauty", "toys",
                  "garden", "office", "sports"]
TAGS = ["urgent", "billing", "vegan", "gluten-free", "beta", "refund", "travel", "family",
        "weekend", "remote", "vip", "follow-up", "café", "design", "backend", "onboarding"]
SENTENCES = [
    "The package arrived two days late and the box was crushed on one corner.",
    "Honestly the best purchase I've made this year — works exactly as described 👍",
    "Customer reports that the app crashes when uploading photos larger than 10 MB.",
    "La livraison était rapide, mais la notice n'est qu'en anglais.",
    "Der Akku hält ungefähr acht Stunden, was für den Preis völlig in Ordnung ist.",
    "画质很好，但是遥控器有点不灵敏。",
    "Please reschedule the meeting to Thursday afternoon if possible.",
    "We need to rotate the API keys before the audit on Friday.",
    "The soup was too salty, but the service was friendly and quick 😊",
    "El hotel estaba limpio y el desayuno incluía churros recién hechos.",
    "Intermittent 502 errors from the payment gateway since the last deploy.",
    "A slow-burning thriller with a twist that genuinely surprised me.",
    "Kids loved it! Assembly took about 20 minutes with the included Allen key.",
    "東京駅から徒歩5分で、とても便利な場所でした。",
    "Temperature sensor #4 drifts by roughly 0.5 °C per hour after warm-up.",
    "Refund issued for order #A-10293; the customer keeps the replacement.",
    "I'd give it five stars if the strap didn't squeak ☹️",
    "Não recomendo: o tamanho é muito menor do que o anunciado.",
    "The quarterly report shows a 12% increase in recurring revenue.",
    "Remember to bring your passport and the printed boarding pass ✈️",
    "Het eten was heerlijk en de bediening erg vriendelijk.",
    "Support said a firmware update should fix the Bluetooth pairing issue.",
    "The tutorial skips the step where you configure the \"redirect_uri\".",
    "Users in the EU region see timestamps in UTC instead of local time.",
]
TITLES = ["Login fails with SSO after password reset", "Quarterly planning sync",
          "Dinner at Ōsaka Kitchen", "Refund request for damaged blender",
          "Café opening — soft launch", "Migrate billing service to Postgres 16",
          "Team offsite in Kraków", "Weekly 1:1 with Søren", "Dashboard shows stale data",
          "Dentist appointment 🦷", "Release v2.4.0 checklist"]
MOVIES = ["Spirited Away", "Amélie", "Parasite", "The Grand Budapest Hotel", "Roma",
          "Crouching Tiger, Hidden Dragon", "Arrival", "Das Boot", "Cidade de Deus"]
RECIPES = ["Shakshuka", "Pão de Queijo", "Crème Caramel", "Chicken Katsu Curry",
           "Spanakopita", "Vegan Pad Thai", "Käsespätzle", "Mapo Tofu 麻婆豆腐"]
INGREDIENTS = ["eggs", "crème fraîche", "tapioca flour", "jalapeño", "soy sauce", "tofu",
               "gruyère", "olive oil", "smoked paprika", "rice noodles", "spinach", "garlic"]
UNITS = ["g", "ml", "tbsp", "tsp", "cup", "piece", "pinch"]
AIRPORTS = ["LIS", "GRU", "ZRH", "KRK", "HND", "KEF", "MEX", "YUL", "BER", "LOS", "SEA", "JFK"]
AIRLINES = ["TP", "LA", "LX", "LO", "NH", "FI", "AM", "AC", "LH", "DL"]
CURRENCIES = ["EUR", "USD", "BRL", "CHF", "PLN", "JPY", "GBP", "SEK"]
LANGS = ["en", "fr", "de", "es", "pt", "ja", "zh", "ko", "tr", "nl"]
ENTITY_TEXTS = [("Angela Merkel", "PERSON"), ("Volkswagen", "ORG"), ("Zürich", "LOC"),
                ("Tim Cook", "PERSON"), ("Apple", "ORG"), ("Cupertino", "LOC"),
                ("東京", "LOC"), ("Banco do Brasil", "ORG"), ("Frida Kahlo", "PERSON"),
                ("2024-03-01", "DATE"), ("Médecins Sans Frontières", "ORG")]
LOG_MESSAGES = ["connection reset by peer", "request completed in 312 ms",
                "retrying upstream call (attempt 3/5)", "cache miss for key user:8812",
                "user session expired", "disk usage above 90% on /var",
                "failed to parse config: unexpected token '}' at line 14"]
SERVICES = ["auth-service", "billing-api", "search-indexer", "gateway", "notifier",
            "checkout-web"]
SQL = ["SELECT id, email FROM users WHERE created_at > '2024-01-01' ORDER BY id LIMIT 50",
       "SELECT country, COUNT(*) AS n FROM orders GROUP BY country HAVING COUNT(*) > 10",
       "WITH recent AS (SELECT * FROM events WHERE ts > now() - interval '1 day') "
       "SELECT type, count(*) FROM recent GROUP BY type",
       "SELECT p.name, SUM(li.qty) FROM line_items li JOIN products p ON p.id = li.product_id "
       "GROUP BY p.name ORDER BY 2 DESC LIMIT 10"]
TABLES = ["users", "orders", "line_items", "products", "events", "invoices", "sessions"]
PATHS = ["src/app/main.py", "lib/utils/date.ts", "cmd/server/main.go", "src/parser.c",
         "include/parser.h", "tests/test_api.py", "web/components/Button.tsx"]
GENRES = ["drama", "comedy", "thriller", "animation", "documentary", "sci-fi"]
SONGS = ["Bohemian Rhapsody", "Garota de Ipanema", "La Vie en rose", "Dancing Queen",
         "上を向いて歩こう", "Despacito", "99 Luftballons"]
ARTISTS = ["Queen", "João Gilberto", "Édith Piaf", "ABBA", "坂本九", "Luis Fonsi", "Nena"]
BOOKS = [("Cien años de soledad", "Gabriel García Márquez"), ("Norwegian Wood", "村上春樹"),
         ("Les Misérables", "Victor Hugo"), ("Der Process", "Franz Kafka"),
         ("Things Fall Apart", "Chinua Achebe"), ("Dune", "Frank Herbert")]
QUESTIONS = ["What is the capital of Australia?", "Which planet has the most moons?",
             "Who wrote 'Cien años de soledad'?", "What does HTTP status 418 mean?",
             "How many bones are in the adult human body?"]
CODE = ['return fmt.Errorf("parse %s: %w", name, err)',
        "if not rows:\n    return []\nreturn [r.id for r in rows]",
        "const [open, setOpen] = useState(false);",
        'logger.warning("retrying %s (attempt %d)", url, attempt)',
        "for (size_t i = 0; i < n; i++)\n    sum += x[i];"]
STEPS = ["Open the app and sign in with SSO", "Go to Settings → Billing",
         "Upload a photo larger than 10 MB", "Tap \"Save\" twice quickly",
         "Reload the page", "Switch the language to 日本語"]
EMOJI = ["🎉", "🚀", "😅", "🙏", "🌧️", "☕", "✅", "🔥"]


def person(r):
    if r.random() < 0.15:
        return r.choice(CJK_NAMES)
    return f"{r.choice(FIRST)} {r.choice(LAST)}"


def ascii_fold(s):
    table = str.maketrans("éèêëáàâãäíïóôõöúüçñøåłşıßō", "eeeeaaaaaiioooouucnoalsiso")
    return "".join(c for c in s.lower().translate(table) if c.isascii() and c.isalnum())


def email(r):
    first, last = r.choice(FIRST), r.choice(LAST)
    return f"{ascii_fold(first)}.{ascii_fold(last)}@{r.choice(DOMAINS)}"


def sentences(r, lo=1, hi=3):
    text = " ".join(r.sample(SENTENCES, r.randint(lo, hi)))
    if r.random() < 0.2:
        text += " " + r.choice(EMOJI)
    return text


def paragraph_text(r):
    # An email or a note: paragraphs separated by line breaks (escaped in JSON).
    return f"Hi {r.choice(FIRST)},\n\n{sentences(r, 2, 3)}\n\nBest regards,\n{person(r)}"


def uuid(r):
    h = "%032x" % r.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[r.randrange(4)]}{h[17:20]}-{h[20:]}"


def date(r):
    return f"{r.randint(2019, 2026)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def time(r):
    zone = r.choice(["Z", "+01:00", "-05:00", "+09:00", "+05:30"])
    frac = f".{r.randint(0, 999):03d}" if r.random() < 0.3 else ""
    return f"{r.randint(0, 23):02d}:{r.choice([0, 15, 30, 45]):02d}:{r.randint(0, 59):02d}" \
           f"{frac}{zone}"


def date_time(r):
    return f"{date(r)}T{time(r)}"


def url(r):
    path = r.choice(["docs/getting-started", "api/v2/orders", "blog/2024/release-notes",
                     "products/42", "help"])
    return f"https://www.{r.choice(DOMAINS)}/{path}"


def phone(r):
    return "+" + str(r.choice([1, 33, 49, 351, 55, 81, 234])) + "".join(
        str(r.randint(0, 9)) for _ in range(r.randint(8, 10)))


# Strings by property name. A name not here gets a short phrase (see string_for).
STRING_HINTS = {
    "name": person, "full_name": person, "display_name": person, "customer_name": person,
    "author": person, "assignee": person, "reviewer": person, "organizer": person,
    "guest_name": person, "patient_name": person, "passenger_name": person, "owner": person,
    "reporter": person, "speaker": person, "contact_name": person, "manager": person,
    "first_name": lambda r: r.choice(FIRST), "last_name": lambda r: r.choice(LAST),
    "email": email, "to": email, "cc": email, "from": email, "reply_to": email,
    "attendees": email, "recipients": email, "emails": email,
    "phone": phone, "phone_number": phone, "mobile": phone,
    "city": lambda r: r.choice(CITIES)[0], "origin_city": lambda r: r.choice(CITIES)[0],
    "location": lambda r: r.choice(CITIES)[0], "destination": lambda r: r.choice(CITIES)[0],
    "street": lambda r: f"{r.choice(STREETS)} {r.randint(1, 240)}",
    "line1": lambda r: f"{r.randint(1, 999)} {r.choice(STREETS)}",
    "line2": lambda r: r.choice(["Apt 4B", "2º andar", "Suite 300", "Hinterhaus, 3. OG"]),
    "company": lambda r: r.choice(COMPANIES), "vendor": lambda r: r.choice(COMPANIES),
    "employer": lambda r: r.choice(COMPANIES), "merchant": lambda r: r.choice(COMPANIES),
    "bio": lambda r: sentences(r, 1, 2), "description": sentences, "summary": sentences,
    "body": paragraph_text, "message": lambda r: r.choice(LOG_MESSAGES), "notes": sentences,
    "comment": sentences, "text": sentences, "content": sentences, "review": sentences,
    "review_text": sentences, "answer": sentences, "explanation": sentences,
    "reasoning": sentences, "rationale": sentences, "feedback": sentences,
    "source_text": sentences, "translated_text": sentences, "quote": sentences,
    "instructions": sentences, "steps": sentences, "step": sentences, "details": sentences,
    "resolution": sentences, "symptoms": sentences, "question": lambda r: r.choice(QUESTIONS),
    "title": lambda r: r.choice(TITLES), "subject": lambda r: r.choice(TITLES),
    "headline": lambda r: r.choice(TITLES), "task": lambda r: r.choice(TITLES),
    "action_items": lambda r: r.choice(TITLES), "highlights": sentences,
    "product_name": lambda r: r.choice(PRODUCTS), "item_name": lambda r: r.choice(PRODUCTS),
    "category": lambda r: r.choice(CATEGORY_WORDS), "tags": lambda r: r.choice(TAGS),
    "labels": lambda r: r.choice(TAGS), "keywords": lambda r: r.choice(TAGS),
    "interests": lambda r: r.choice(TAGS + ["hiking", "jazz", "photography", "料理"]),
    "skills": lambda r: r.choice(["Python", "SQL", "Kubernetes", "Rust", "public speaking",
                                  "Figma", "C", "Go"]),
    "movie_title": lambda r: r.choice(MOVIES), "recipe_name": lambda r: r.choice(RECIPES),
    "ingredient": lambda r: r.choice(INGREDIENTS), "unit": lambda r: r.choice(UNITS),
    "cuisine": lambda r: r.choice(["Portuguese", "Japanese", "Mexican", "Levantine", "Thai"]),
    "service": lambda r: r.choice(SERVICES), "host": lambda r: r.choice(
        ["web-01", "db-primary", "worker-7", "edge-fra-2"]),
    "query": lambda r: r.choice(SQL), "sql": lambda r: r.choice(SQL),
    "table": lambda r: r.choice(TABLES), "tables": lambda r: r.choice(TABLES),
    "columns": lambda r: r.choice(["id", "email", "created_at", "total", "country"]),
    "path": lambda r: r.choice(PATHS), "file": lambda r: r.choice(PATHS),
    "url": url, "website": url, "homepage": url, "source_url": url, "image_url": url,
    "song": lambda r: r.choice(SONGS), "track": lambda r: r.choice(SONGS),
    "artist": lambda r: r.choice(ARTISTS), "book_title": lambda r: r.choice(BOOKS)[0],
    "entity": lambda r: r.choice(ENTITY_TEXTS)[0], "span": lambda r: r.choice(ENTITY_TEXTS)[0],
    "surface": lambda r: r.choice(ENTITY_TEXTS)[0],
    "subject_entity": lambda r: r.choice(ENTITY_TEXTS)[0],
    "object_entity": lambda r: r.choice(ENTITY_TEXTS)[0],
    "predicate": lambda r: r.choice(["works_for", "located_in", "founded", "born_in"]),
    "genre": lambda r: r.choice(GENRES), "genres": lambda r: r.choice(GENRES),
    "airline": lambda r: r.choice(AIRLINES),
    "seat": lambda r: f"{r.randint(1, 40)}{'ABCDEF'[r.randrange(6)]}",
    "room_type": lambda r: r.choice(["double", "twin", "suite"]),
    "diagnosis": lambda r: r.choice(["seasonal allergies", "mild dehydration", "sprained ankle"]),
    "medication": lambda r: r.choice(["ibuprofen 400 mg", "cetirizine 10 mg", "amoxicillin"]),
    "allergies": lambda r: r.choice(["penicillin", "peanuts", "lactose", "none known"]),
    "key": lambda r: r.choice(["dark_mode", "beta_search", "new_checkout"]),
    "value": lambda r: r.choice(["enabled", "42", "eu-west-1", "Grüße"]),
    "prompt": lambda r: r.choice(QUESTIONS), "option": lambda r: r.choice(
        ["Canberra", "Sydney", "Saturn", "Jupiter", "206", "I'm a teapot"]),
    "options": lambda r: r.choice(["Canberra", "Sydney", "Saturn", "Jupiter", "206"]),
    "hashtags": lambda r: "#" + r.choice(TAGS).replace("-", ""),
    "caption": sentences, "alt_text": sentences, "label": lambda r: r.choice(TAGS),
    "reason": sentences, "status_message": lambda r: r.choice(LOG_MESSAGES),
    "error": lambda r: r.choice(LOG_MESSAGES), "stack": lambda r: "at main (src/app/main.py:42)",
    "result": sentences, "tracking_number": lambda r: f"1Z{r.getrandbits(40):X}",
    "carrier": lambda r: r.choice(["DHL", "UPS", "Correios", "La Poste", "ヤマト運輸"]),
    "make": lambda r: r.choice(["Toyota", "Škoda", "Citroën", "Volvo", "Tesla"]),
    "model": lambda r: r.choice(["Corolla", "Octavia", "C4", "XC40", "Model 3"]),
    "color": lambda r: r.choice(["midnight blue", "rouge", "silver", "pearl white"]),
    "neighborhood": lambda r: r.choice(["Alfama", "Kreuzberg", "Shibuya", "Vila Madalena"]),
    "amenities": lambda r: r.choice(["wifi", "parking", "balcony", "dishwasher", "elevator"]),
    "symbol": lambda r: r.choice(["AAPL", "VOW3", "PETR4", "7203", "NESN"]),
    "exchange": lambda r: r.choice(["NASDAQ", "XETRA", "B3", "TSE", "SIX"]),
    "instrument": lambda r: r.choice(["guitar", "violin", "shakuhachi", "piano"]),
    "department": lambda r: r.choice(["Engineering", "Finance", "Recherche", "営業部"]),
    "role": lambda r: r.choice(["Backend Engineer", "Product Manager", "Data Analyst",
                                "Ingénieure logiciel"]),
    "degree": lambda r: r.choice(["BSc Computer Science", "MBA", "Licenciatura em Economia"]),
    "school": lambda r: r.choice(["Universidade de Lisboa", "ETH Zürich", "東京大学", "MIT"]),
    "headers": lambda r: "application/json", "method": lambda r: "GET",
    "channel": lambda r: r.choice(["#general", "#incidents", "#random"]),
    "emoji": lambda r: r.choice(EMOJI), "mood": lambda r: r.choice(EMOJI),
    "expression": lambda r: r.choice(["2x + 3 = 11", "x^2 - 5x + 6 = 0", "∫ x dx"]),
    "work": lambda r: r.choice(["2x = 8", "x = 4", "(x - 2)(x - 3) = 0"]),
    "final_answer": lambda r: r.choice(["x = 4", "x = 2 or x = 3", "x²/2 + C"]),
    "source_lang": lambda r: r.choice(LANGS), "target_lang": lambda r: r.choice(LANGS),
    "language": lambda r: r.choice(LANGS), "country": lambda r: r.choice(CITIES)[1],
    "currency": lambda r: r.choice(CURRENCIES), "timezone": lambda r: r.choice(
        ["Europe/Lisbon", "America/Sao_Paulo", "Asia/Tokyo", "UTC"]),
    "replacement": lambda r: r.choice(CODE), "steps_to_reproduce": lambda r: r.choice(STEPS),
    "postal_code": lambda r: r.choice(["1100-148", "01310-100", "8001", "31-042", "98101",
                                       "150-0002", "H2X 1Y4"]),
    "categories": lambda r: r.choice(["café", "bakery", "museum", "park", "ramen", "bookstore"]),
    "question_id": lambda r: f"q{r.randint(1, 40)}", "cons": sentences, "pros": sentences,
    "series_name": lambda r: r.choice(["revenue", "active users", "latency p99", "Umsatz"]),
    "place_name": lambda r: r.choice(["Café A Brasileira", "Museu do Ipiranga", "Ichiran Ramen",
                                      "Tiergarten", "Gare de Lyon", "Fika Kaffebar"]),
    "venue": lambda r: r.choice(["Café A Brasileira", "Hotel Adlon", "Zeppelin Hall"]),
    "decisions": sentences, "alternatives": sentences, "follow_up_questions": lambda r: r.choice(
        ["Is Sydney larger than Canberra?", "¿Cuándo se publicó?", "What changed in v2?"]),
    "filename": lambda r: r.choice(["invoice-0042.pdf", "Präsentation.pptx", "photo_東京.jpg"]),
    "term": lambda r: r.choice(["invoice", "shipping address", "refund", "checkout"]),
    "translation": lambda r: r.choice(["fatura", "Lieferadresse", "remboursement", "レジ"]),
    "address": lambda r: f"{r.choice(STREETS)} {r.randint(1, 240)}, {r.choice(CITIES)[0]}",
    "features": lambda r: r.choice(["heated seats", "navigation", "parking sensors",
                                    "Apple CarPlay", "tow bar"]),
    "input": lambda r: f"{r.randint(1, 240)} {r.choice(STREETS).lower()}, "
    f"{r.choice(CITIES)[0].lower()}",
    "aspect": lambda r: r.choice(["battery life", "price", "service", "food", "delivery"]),
    "visit_reason": sentences, "special_requests": sentences, "expected": sentences,
    "actual": sentences, "calendar_id": lambda r: r.choice(["primary", "team-eng@acme.test"]),
    "commit_message": lambda r: r.choice(["Fix off-by-one in date parser",
                                          "Handle empty headers in the proxy",
                                          "Add retry to the upload client"]),
    "restaurant": lambda r: r.choice(["Taberna da Rua das Flores", "Sushi Saito", "Noma"]),
    "browser": lambda r: r.choice(["Firefox 126", "Chrome 125", "Safari 17.5"]),
    "pattern": lambda r: r.choice(["TODO", "parse_config(", "fmt.Errorf", "useEffect"]),
    "series_title": lambda r: r.choice(["Dune Chronicles", "Discworld", "A Song of Ice"]),
    "goal": sentences, "playlist_name": lambda r: r.choice(["Sunday Morning ☕", "Foco total",
                                                          "Roadtrip 2024", "夜のドライブ"]),
    "reference": lambda r: f"Invoice {r.randint(1000, 9999)} / {r.choice(COMPANIES)}",
    "provider": lambda r: r.choice(["Allianz", "Bupa", "SulAmérica", "Aetna"]),
    "member_id": lambda r: f"M{r.randint(100000, 99999999)}",
    "topic": lambda r: r.choice(["geography", "astronomy", "literature", "web"]),
    "next_page_token": lambda r: "%x" % r.getrandbits(96), "source": url,
    "publisher": lambda r: r.choice(["Penguin", "Gallimard", "新潮社", "Companhia das Letras"]),
    "recipient": person, "parameters": lambda r: r.choice(["2024-01-01", "DE", "pending"]),
}


def string_for(r, prop):
    """A string for a property called prop (its array's name for an array's items)."""
    gen = STRING_HINTS.get(prop)
    if gen is None and prop.endswith("s"):
        gen = STRING_HINTS.get(prop[:-1])
    if gen is None:
        return r.choice(TAGS + CATEGORY_WORDS + [w.lower() for w in TITLES[:4]])
    return gen(r)


def fit_length(r, s, lo, hi):
    """s cut or extended so that lo <= len(s) <= hi (code points, as JSON Schema counts)."""
    if hi is not None and len(s) > hi:
        s = s[:hi]
        if " " in s[:-1] and hi > 8:
            s = s[:s.rindex(" ")]
        s = s.rstrip() or s
    while len(s) < lo:
        s = (s + " " + r.choice(TAGS)).strip()
    if hi is not None and len(s) > hi:
        s = s[:hi]
    return s


NUMBER_HINTS = {
    "price": (1, 900, 2), "unit_price": (1, 300, 2), "amount": (1, 5000, 2),
    "total": (10, 9000, 2), "subtotal": (10, 8000, 2), "tax": (0, 300, 2),
    "discount": (0, 50, 2), "balance": (-500, 20000, 2), "confidence": (0, 1, 3),
    "score": (-1, 1, 3), "probability": (0, 1, 4), "latitude": (-90, 90, 5),
    "longitude": (-180, 180, 5), "lat": (-90, 90, 5), "lon": (-180, 180, 5),
    "temperature": (-20, 45, 1), "humidity": (5, 100, 1), "value": (-50, 500, 2),
    "rating": (1, 5, 1), "weight_kg": (0.1, 40, 2), "quantity": (0.25, 500, 2),
    "duration_hours": (0.5, 12, 1), "pressure_hpa": (950, 1050, 1), "battery": (0, 100, 1),
    "open": (10, 400, 2), "close": (10, 400, 2), "change_pct": (-8, 8, 2),
    "area_m2": (20, 400, 1), "mileage_km": (0, 250000, 0), "start": (0, 10, 0),
}


def number_for(r, prop):
    lo, hi, digits = NUMBER_HINTS.get(prop, (0, 1000, 2))
    x = round(r.uniform(lo, hi), digits)
    return int(x) if digits == 0 else x


INT_HINTS = {
    "age": (18, 90), "quantity": (1, 12), "qty": (1, 12), "year": (1970, 2026),
    "stars": (1, 5), "rating": (1, 5), "guests": (1, 8), "adults": (1, 4), "children": (0, 3),
    "nights": (1, 14), "page": (1, 20), "limit": (10, 100), "count": (0, 50),
    "status_code": (200, 504), "port": (1024, 65535), "duration_ms": (1, 5000),
    "servings": (1, 8), "minutes": (5, 120), "prep_minutes": (5, 60), "runtime_minutes": (80, 180),
    "bedrooms": (0, 5), "floor": (0, 30), "line": (1, 900), "start": (0, 200), "end": (1, 300),
    "priority": (1, 5), "retries": (0, 5), "max_results": (1, 50), "pages": (90, 900),
    "days": (1, 10), "dose_mg": (50, 1000), "price_max": (40, 400), "position": (1, 30), "votes": (0, 5000), "volume": (1000, 900000),
}


def integer_for(r, prop, lo, hi):
    dlo, dhi = INT_HINTS.get(prop, (1, 100000))
    if lo is not None and hi is not None and not (lo <= dlo <= dhi <= hi):
        dlo, dhi = lo, hi
    elif lo is not None and dlo < lo:
        dlo, dhi = lo, max(lo, dhi)
    elif hi is not None and dhi > hi:
        dlo, dhi = min(dlo, hi), hi
    return r.randint(dlo, dhi)


# Strings matching the patterns the schemas use (keyed by the pattern).
PATTERN_VALUES = {
    r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$": email,
    r"^\+[1-9][0-9]{7,14}$": phone,
    r"^[A-Z]{3}-[0-9]{4,6}$": lambda r: f"{r.choice(['SKU', 'KIT', 'ACC'])}-"
    f"{r.randint(1000, 999999)}",
    r"^[0-9]{5}(-[0-9]{4})?$": lambda r: f"{r.randint(10000, 99999)}"
    + (f"-{r.randint(1000, 9999)}" if r.random() < 0.5 else ""),
    r"^[A-Z]{3}$": lambda r: r.choice(AIRPORTS),
    r"^[A-Z]{2}$": lambda r: r.choice(CITIES)[1],
    r"^#[0-9a-fA-F]{6}$": lambda r: "#%06x" % r.getrandbits(24),
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$": lambda r: f"{r.randint(0, 3)}."
    f"{r.randint(0, 20)}.{r.randint(0, 40)}",
    r"^TKT-\d{6}$": lambda r: f"TKT-{r.randint(0, 999999):06d}",
    r"^[a-z]{2}(-[A-Z]{2})?$": lambda r: r.choice(["en", "pt-BR", "fr-CA", "ja", "de-CH"]),
    r"^([01]\d|2[0-3]):[0-5]\d$": lambda r: f"{r.randint(0, 23):02d}:"
    f"{r.choice([0, 15, 30, 45]):02d}",
    r"^https://[\w.-]+(/[\w./-]*)?$": url,
    r"^[a-z_][a-z0-9_]*$": lambda r: r.choice(TABLES),
    r"^[A-Z0-9]{2}\d{1,4}$": lambda r: f"{r.choice(AIRLINES)}{r.randint(1, 9999)}",
    r"^(SELECT|WITH) ": lambda r: r.choice(SQL),
    r"\.(py|ts|go|c|h|tsx)$": lambda r: r.choice(PATHS),
    r"^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$": lambda r: f"{r.choice(['PT', 'DE', 'FR'])}"
    f"{r.randint(10, 99)}{r.getrandbits(80):020X}",
    r"^@[A-Za-z0-9_]{1,15}$": lambda r: "@" + ascii_fold(r.choice(FIRST))[:12] + "_"
    + str(r.randint(1, 99)),
    r"^(GET|POST|PUT|PATCH|DELETE)$": lambda r: r.choice(["GET", "POST", "PATCH"]),
    r"\d": lambda r: f"{r.choice(STREETS)} {r.randint(1, 300)}",
    r"^[A-Z][a-z]+(?: [A-Z][a-z]+)*$": lambda r: r.choice(["Lisbon", "New York", "Rio Grande",
                                                           "Salt Lake City"]),
    r"^INV-\d{4}-\d{5}$": lambda r: f"INV-{r.randint(2019, 2026)}-{r.randint(0, 99999):05d}",
    r"^[0-9a-f]{32}$": lambda r: "%032x" % r.getrandbits(128),
    r"^[A-Z]{2}-\d{4}$": lambda r: f"{r.choice(['TH', 'HU', 'PR'])}-{r.randint(0, 9999):04d}",
    r"^[A-Z0-9]{2}$": lambda r: r.choice(AIRLINES),
    r"^(97[89])?\d{9}[\dX]$": lambda r: "978" + "".join(str(r.randint(0, 9)) for _ in range(9))
    + r.choice("0123456789X"),
    r"^[A-HJ-NPR-Z0-9]{17}$": lambda r: "".join(r.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789")
                                                for _ in range(17)),
    r"^[A-F]$": lambda r: r.choice("ABCD"),
    r"^[A-Z0-9.]{1,8}$": lambda r: r.choice(["AAPL", "VOW3.DE", "PETR4", "7203.T", "NESN"]),
    r"^#[A-Za-z0-9_]+$": lambda r: "#" + r.choice(TAGS).replace("-", "_").replace("é", "e"),
    r"^evt_[A-Za-z0-9]{16}$": lambda r: "evt_" + "".join(
        r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        for _ in range(16)),
}
