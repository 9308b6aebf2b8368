//! The browser's commands, one by one, against a small collection; quote verification; the
//! rendered observation; answers' citations; and the entity world's demonstrations, whose every
//! cited quote is checked against the pages.

use rlhf_browse::{
    Attr, BrowseConfig, Browser, Command, DemoNoise, Document, EntityWorld, SearchIndex,
    answer_prompt, check_citations, grade, parse_answer,
};
use rlhf_data::world_rng;

fn collection() -> SearchIndex {
    let docs = vec![
        Document {
            url: "velmora".into(),
            title: "Velmora".into(),
            text: "Velmora is a town.\nIts bakers are famous.\nThe river Tasko flows through \
                   Velmora.\nThe mayor of Velmora is Doral.\nVelmora has 7 bridges."
                .into(),
        },
        Document {
            url: "kasto".into(),
            title: "Kasto".into(),
            text: "Kasto is a town.\nKasto trades with Velmora.".into(),
        },
    ];
    SearchIndex::in_ram(&docs).unwrap()
}

fn cfg() -> BrowseConfig {
    BrowseConfig {
        window: 2,
        max_actions: 20,
        ..Default::default()
    }
}

#[test]
fn commands_parse_and_print_in_webgpt_form() {
    let cases = [
        (
            "Search Velmora river",
            Command::Search("Velmora river".into()),
        ),
        ("Clicked on link 2", Command::Click(2)),
        ("clicked on link <1>", Command::Click(1)),
        ("Find in page: mayor", Command::Find("mayor".into())),
        ("Quote: The mayor", Command::Quote("The mayor".into())),
        ("Scroll down", Command::ScrollDown),
        ("scroll up", Command::ScrollUp),
        ("Top", Command::Top),
        ("Back", Command::Back),
        ("End: Answer", Command::Answer),
    ];
    for (text, cmd) in cases {
        assert_eq!(Command::parse(text).unwrap(), cmd, "{text}");
        assert_eq!(Command::parse(&cmd.to_string()).unwrap(), cmd);
    }
    assert!(Command::parse("Search").unwrap_err().contains("needs text"));
    assert!(
        Command::parse("Clicked on link x")
            .unwrap_err()
            .contains("result number")
    );
    assert!(
        Command::parse("Dance")
            .unwrap_err()
            .contains("unknown command")
    );
}

#[test]
fn search_click_scroll_find_top_back_change_the_view() {
    let idx = collection();
    let mut b = Browser::new(&idx, "Who is the mayor of Velmora?", cfg());
    assert!(b.results().is_empty() && b.page_url().is_none());
    b.step(&Command::Search("Velmora".into())).unwrap();
    assert_eq!(b.results()[0].title, "Velmora");
    assert_eq!(b.results().len(), 2);
    b.step(&Command::Click(5)).unwrap();
    assert!(b.note().unwrap().contains("no link 5"));
    assert!(b.page_url().is_none());
    b.step(&Command::Click(0)).unwrap();
    assert_eq!(b.page_url(), Some("velmora"));
    assert_eq!(
        b.visible_lines(),
        ["Velmora is a town.", "Its bakers are famous."]
    );
    b.step(&Command::ScrollDown).unwrap();
    assert_eq!(
        b.visible_lines()[0],
        "The river Tasko flows through Velmora."
    );
    b.step(&Command::ScrollDown).unwrap();
    assert_eq!(b.visible_lines(), ["Velmora has 7 bridges."]);
    b.step(&Command::ScrollDown).unwrap();
    assert!(b.note().unwrap().contains("end of the page"));
    b.step(&Command::ScrollUp).unwrap();
    assert_eq!(
        b.visible_lines()[0],
        "The river Tasko flows through Velmora."
    );
    b.step(&Command::Top).unwrap();
    assert_eq!(b.visible_lines()[0], "Velmora is a town.");
    b.step(&Command::Find("MAYOR of".into())).unwrap();
    assert_eq!(b.visible_lines()[0], "The mayor of Velmora is Doral.");
    b.step(&Command::Find("volcano".into())).unwrap();
    assert!(b.note().unwrap().contains("not found"));
    assert_eq!(b.visible_lines()[0], "The mayor of Velmora is Doral.");
    b.step(&Command::Back).unwrap();
    assert_eq!(b.results().len(), 2, "back to the results");
    b.step(&Command::Back).unwrap();
    assert!(b.note().unwrap().contains("nothing to go back"));
    assert_eq!(b.actions(), 12);
    assert!(!b.is_done());
    b.step(&Command::Answer).unwrap();
    assert!(b.is_done());
}

#[test]
fn quotes_must_be_on_the_page_and_are_numbered() {
    let idx = collection();
    let mut b = Browser::new(&idx, "q", cfg());
    b.act("Quote: Velmora is a town.").unwrap();
    assert!(b.note().unwrap().contains("open one first"));
    b.act("Search Kasto").unwrap();
    b.act("Clicked on link 0").unwrap();
    assert_eq!(b.page_url(), Some("kasto"));
    b.act("Quote: The mayor of Velmora is Doral.").unwrap();
    assert!(b.note().unwrap().contains("not on this page"));
    assert!(b.quotes().is_empty());
    // Case and spacing are forgiven; the text is kept as quoted.
    b.act("Quote: kasto   trades with Velmora.").unwrap();
    assert_eq!(b.note(), None);
    assert_eq!(b.quotes()[0].id, 1);
    assert_eq!(b.quotes()[0].url, "kasto");
    b.act("Quote: Kasto trades with Velmora.").unwrap();
    assert!(b.note().unwrap().contains("already quoted"));
    b.act("Quote: Kasto is a town.").unwrap();
    assert_eq!(b.quotes()[1].id, 2);
    let small = BrowseConfig {
        max_quotes: 2,
        ..cfg()
    };
    let mut c = Browser::new(&idx, "q", small);
    c.act("Search Kasto").unwrap();
    c.act("Clicked on link 0").unwrap();
    c.act("Quote: Kasto is a town.").unwrap();
    c.act("Quote: Kasto trades").unwrap();
    c.act("Quote: with Velmora").unwrap();
    assert_eq!(c.quotes().len(), 2);
    assert!(c.note().unwrap().contains("already 2 quotes"));
}

#[test]
fn the_observation_shows_question_quotes_past_note_and_view() {
    let idx = collection();
    let mut b = Browser::new(&idx, "Who is the mayor of Velmora?", cfg());
    assert_eq!(
        b.render(),
        "Question: Who is the mayor of Velmora?\nQuotes: none\nPast: none\nPage: blank\nAction:"
    );
    b.act("Search Velmora").unwrap();
    let r = b.render();
    assert!(r.contains("Past: Search Velmora\nResults for Velmora:\n[0] Velmora: Velmora is a town.\n[1] Kasto: Kasto is a town.\n"), "{r}");
    b.act("Clicked on link 0").unwrap();
    b.act("Find in page: mayor").unwrap();
    b.act("Quote: The mayor of Velmora is Doral.").unwrap();
    b.act("jump around, then look for the mayor's house")
        .unwrap();
    let r = b.render();
    assert!(
        r.contains("Quotes:\n[1] The mayor of Velmora is Doral.\n"),
        "{r}"
    );
    // The last three actions only, quotes shortened.
    assert!(r.contains("Past: Find in page: mayor | Quote: The mayor of Velmora is Doral. | jump around, then look for the mayor's h…\n"), "{r}");
    assert!(r.contains("Note: Error: unknown command"), "{r}");
    assert!(r.contains("Page: Velmora (lines 4-5 of 5)\nThe mayor of Velmora is Doral.\nVelmora has 7 bridges.\nAction:"), "{r}");
    assert_eq!(
        b.answer_prompt(),
        "Question: Who is the mayor of Velmora?\nQuotes:\n[1] The mayor of Velmora is Doral.\nAnswer:"
    );
    assert_eq!(
        answer_prompt("q?", &[]),
        "Question: q?\nQuotes: none\nAnswer:"
    );
}

#[test]
fn the_action_budget_ends_the_episode() {
    let idx = collection();
    let mut b = Browser::new(
        &idx,
        "q",
        BrowseConfig {
            max_actions: 3,
            ..cfg()
        },
    );
    for _ in 0..3 {
        b.act("Top").unwrap();
    }
    assert!(b.is_done());
    b.act("Search Velmora").unwrap();
    assert_eq!(b.actions(), 3, "no action after the end");
}

#[test]
fn citations_are_parsed_and_verified_against_pages() {
    let idx = collection();
    let mut b = Browser::new(&idx, "Who is the mayor of Velmora?", cfg());
    for a in [
        "Search Velmora",
        "Clicked on link 0",
        "Quote: The mayor of Velmora is Doral.",
        "Quote: Velmora has 7 bridges.",
    ] {
        b.act(a).unwrap();
    }
    let q = b.quotes().to_vec();
    let a = parse_answer("Doral [1][2].");
    assert_eq!(a.text, "Doral.");
    assert_eq!(a.cited, vec![1, 2]);
    let s = check_citations(&a, &q, &idx).unwrap();
    assert!(s.cites_quotes && s.quotes_verified && s.supported);
    // Not in the cited quote; a citation of a missing quote; no citation; a tampered quote.
    assert!(
        !check_citations(&parse_answer("Doral [2]"), &q, &idx)
            .unwrap()
            .supported
    );
    let missing = check_citations(&parse_answer("Doral [1] [3]"), &q, &idx).unwrap();
    assert!(!missing.cites_quotes && !missing.supported);
    assert!(
        !check_citations(&parse_answer("Doral"), &q, &idx)
            .unwrap()
            .cites_quotes
    );
    let mut forged = q.clone();
    forged[0].text = "The mayor of Velmora is Kasto.".into();
    let s = check_citations(&parse_answer("Kasto [1]"), &forged, &idx).unwrap();
    assert!(s.cites_quotes && !s.quotes_verified && !s.supported);
    // Whole words only: "Dor" is not supported by "Doral".
    assert!(
        !check_citations(&parse_answer("Dor [1]"), &q, &idx)
            .unwrap()
            .supported
    );
    assert_eq!(parse_answer("see [a] and [ 2 ]").text, "see [a] and");
}

#[test]
fn the_entity_world_changes_with_the_seed_and_closed_book_is_at_chance_level() {
    let a = EntityWorld::new(0, 50).unwrap();
    let b = EntityWorld::new(1, 50).unwrap();
    assert_ne!(a.towns[0].name, b.towns[0].name);
    assert_eq!(a, EntityWorld::new(0, 50).unwrap());
    let chance = a.chance();
    assert!((chance - (1.0 / 24.0 + 1.0 / 24.0 + 1.0 / 16.0 + 1.0 / 8.0) / 4.0).abs() < 1e-12);
    // Facts are drawn independently of the town: across seeds, a town's river is a fresh draw.
    let qs = a.questions(0..50);
    assert_eq!(qs.len(), 200);
    let q = &qs[5];
    assert_eq!(q.attr, Attr::Mayor);
    assert!(a.fact_line(q.town, q.attr).contains(&q.answer));
    let names: std::collections::HashSet<_> = a.towns.iter().map(|t| &t.name).collect();
    assert_eq!(names.len(), 50, "town names are distinct");
}

#[test]
fn demonstrations_browse_for_real_and_every_citation_checks_out() {
    let world = EntityWorld::new(3, 60).unwrap();
    let idx = SearchIndex::in_ram(&world.documents()).unwrap();
    let mut rng = world_rng(3, 1);
    let (mut right, mut supported, mut clicks_back) = (0, 0, 0);
    let qs = world.questions(0..60);
    for q in &qs {
        let demo = world
            .demonstration(
                q,
                &idx,
                BrowseConfig::default(),
                &DemoNoise::default(),
                &mut rng,
            )
            .unwrap();
        assert!(demo.steps[0].action.starts_with("Search "));
        assert_eq!(demo.steps.last().unwrap().action, "End: Answer");
        clicks_back += usize::from(demo.steps.iter().any(|s| s.action == "Back"));
        // Replay the actions in a fresh browser: the same observations, and the quotes verify.
        let mut b = Browser::new(&idx, &q.text, BrowseConfig::default());
        for s in &demo.steps {
            assert_eq!(b.render(), s.observation);
            b.act(&s.action).unwrap();
            assert!(
                b.note().is_none_or(|n| !n.starts_with("Error")),
                "{:?}",
                b.note()
            );
        }
        assert_eq!(b.answer_prompt(), demo.answer_prompt);
        for quote in b.quotes() {
            let page = idx.get(&quote.url).unwrap().unwrap();
            assert!(rlhf_browse::occurs_in(&quote.text, &page.text));
        }
        let g = grade(q, &demo.answer, b.quotes(), &idx).unwrap();
        assert!(g.support.cites_quotes && g.support.quotes_verified);
        right += usize::from(g.correct);
        supported += usize::from(g.support.supported);
    }
    let n = qs.len() as f64;
    // About 80% right (10% wrong quotes, 10% unsupported claims) and 90% supported.
    assert!((0.65..0.93).contains(&(right as f64 / n)), "{right}");
    assert!(
        (0.78..0.98).contains(&(supported as f64 / n)),
        "{supported}"
    );
    assert!(clicks_back > 10 && clicks_back < 70, "{clicks_back}");
    // A clean demonstrator is always right and supported.
    let clean = DemoNoise {
        wrong_click: 0.0,
        extra_scroll: 0.0,
        wrong_quote: 0.0,
        unsupported: 0.0,
    };
    for q in &qs[..40] {
        let demo = world
            .demonstration(q, &idx, BrowseConfig::default(), &clean, &mut rng)
            .unwrap();
        let mut b = Browser::new(&idx, &q.text, BrowseConfig::default());
        for s in &demo.steps {
            b.act(&s.action).unwrap();
        }
        let g = grade(q, &demo.answer, b.quotes(), &idx).unwrap();
        assert!(g.correct && g.support.supported, "{:?} {}", q, demo.answer);
        assert_eq!(g.score, 1.5);
    }
}
