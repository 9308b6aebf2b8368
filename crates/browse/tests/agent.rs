//! The browsing agent's loop with scripted policies: every episode gets the policy's commands in
//! order, one batched call per round; the answer call sees the quotes; a policy whose context
//! cannot hold the observation ends browsing at once; rejected commands are counted.

use std::cell::RefCell;

use rlhf_browse::{
    ANSWER_ROUND, AgentConfig, BrowseConfig, Document, Policy, Result, SearchIndex, browse_batch,
};

fn index() -> SearchIndex {
    let docs = vec![Document {
        url: "velmora".into(),
        title: "Velmora".into(),
        text: "Velmora is a town.\nThe river Tasko flows through Velmora.".into(),
    }];
    SearchIndex::in_ram(&docs).unwrap()
}

/// Types a fixed script, then answers citing quote 1; records the batch size of every call.
struct Script {
    commands: Vec<&'static str>,
    room: bool,
    calls: RefCell<Vec<(u64, usize)>>,
}

impl Policy for Script {
    fn fits(&self, _prompt: &str, _new_tokens: usize) -> Result<bool> {
        Ok(self.room)
    }

    fn act(&self, prompts: &[String], round: u64) -> Result<Vec<String>> {
        self.calls.borrow_mut().push((round, prompts.len()));
        let text = if round == ANSWER_ROUND {
            assert!(prompts.iter().all(|p| p.contains("Velmora")));
            "Tasko [1]".to_string()
        } else {
            self.commands
                .get(round as usize)
                .unwrap_or(&"End: Answer")
                .to_string()
        };
        Ok(vec![text; prompts.len()])
    }
}

fn agent() -> AgentConfig {
    AgentConfig {
        browse: BrowseConfig::default(),
        max_action_tokens: 8,
        trace: true,
    }
}

#[test]
fn episodes_follow_the_policy_round_by_round() {
    let policy = Script {
        commands: vec![
            "Search Velmora river",
            "Clicked on link 0",
            "Quote: The river Tasko flows through Velmora.",
            "Fly away",
            "End: Answer",
        ],
        room: true,
        calls: RefCell::new(vec![]),
    };
    let qs = vec![
        "Which river flows through Velmora?".to_string(),
        "What is Velmora?".to_string(),
    ];
    let eps = browse_batch(&policy, &index(), &qs, 3, &agent(), |_, _| {}).unwrap();
    assert_eq!(eps.len(), 2);
    for (q, group) in qs.iter().zip(&eps) {
        assert_eq!(group.len(), 3);
        for e in group {
            assert_eq!(&e.question, q);
            assert_eq!(e.actions.len(), 5);
            assert_eq!(e.observations.len(), 5, "traced");
            assert_eq!(e.rejected, 1, "'Fly away' is not a command");
            assert_eq!(e.quotes.len(), 1);
            assert_eq!(e.quotes[0].text, "The river Tasko flows through Velmora.");
            assert_eq!(e.answer, "Tasko [1]");
        }
    }
    // All six episodes stepped together: one call per round, then one for the answers.
    let calls = policy.calls.borrow();
    assert_eq!(
        *calls,
        [(0, 6), (1, 6), (2, 6), (3, 6), (4, 6), (ANSWER_ROUND, 6)]
    );
}

#[test]
fn an_observation_the_context_cannot_hold_ends_browsing() {
    let policy = Script {
        commands: vec!["Search Velmora"],
        room: false,
        calls: RefCell::new(vec![]),
    };
    let qs = vec!["Which river flows through Velmora?".to_string()];
    let eps = browse_batch(&policy, &index(), &qs, 1, &agent(), |_, _| {}).unwrap();
    assert!(eps[0][0].actions.is_empty());
    assert_eq!(*policy.calls.borrow(), [(ANSWER_ROUND, 1)]);
}
