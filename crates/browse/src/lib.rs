//! `rlhf-browse`: WebGPT's browsing environment (Nakano et al. 2021) for models of any size.
//!
//! - [`index`]: BM25 search with tantivy over documents, in memory or on disk
//!   (`rlhf browse index DIR`), pages read back by URL.
//! - [`env`]: the [`Browser`] and its commands, the text observation, verified [`Quote`]s, and
//!   cited answers ([`parse_answer`], [`check_citations`]).
//! - [`world`]: the seeded entity world of experiment E7, its scripted demonstrations and oracle.
//! - [`agent`]: a [`Policy`] (a checkpoint through [`ModelPolicy`], or a script) typing the
//!   commands, many episodes stepped together ([`browse_batch`]).
//!
//! ```
//! use rlhf_browse::{BrowseConfig, Browser, Document, SearchIndex};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let docs = vec![Document { url: "a".into(), title: "Velmora".into(),
//!                            text: "Velmora is a town.\nThe river Tasko flows through Velmora.".into() }];
//! let index = SearchIndex::in_ram(&docs)?;
//! let mut b = Browser::new(&index, "Which river flows through Velmora?", BrowseConfig::default());
//! b.act("Search Velmora")?;
//! b.act("Clicked on link 0")?;
//! b.act("Quote: The river Tasko flows through Velmora.")?;
//! b.act("End: Answer")?;
//! assert!(b.is_done());
//! assert_eq!(b.quotes()[0].id, 1);
//! # Ok(())
//! # }
//! ```

pub mod agent;
pub mod env;
pub mod error;
pub mod index;
pub mod world;

pub use agent::{ANSWER_ROUND, AgentConfig, Episode, ModelPolicy, Policy, browse_batch};
pub use env::{
    BrowseConfig, Browser, CitedAnswer, Command, Quote, Support, answer_prompt, check_citations,
    occurs_in, parse_answer,
};
pub use error::{BrowseError, Result};
pub use index::{Document, Hit, SearchIndex, read_folder};
pub use world::{Attr, DemoNoise, Demonstration, EntityWorld, Grade, Question, grade};
