//! One module per subcommand.

pub mod browse;
pub mod chat;
pub mod data;
pub mod demo;
pub mod distill;
pub mod dpo;
pub mod eval;
pub mod experiment;
pub mod flan;
pub mod generate;
pub mod grpo;
pub mod import;
pub mod label;
pub mod launch;
pub mod merge;
pub mod nll;
pub mod ppo;
pub mod pretrain;
pub mod reward;
pub mod sample;
pub mod score;
pub mod self_improve;
pub mod serve;
pub mod sft;
