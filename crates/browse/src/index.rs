//! The search engine behind `Search <query>`: BM25 over document titles and bodies with tantivy,
//! in memory (the entity world of an experiment) or on disk (`rlhf browse index DIR`).
//!
//! A document is a URL (for a folder: the file's relative path), a title and its text. The
//! index stores all three, so a page is read back from the index by its URL: the quotes of an
//! answer are checked against exactly what the browser showed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{QueryParser, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, TantivyDocument, Term, doc};

use crate::error::{BrowseError, Result};

/// One page of the collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub url: String,
    pub title: String,
    pub text: String,
}

/// A search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub url: String,
    pub title: String,
    /// The start of the page's first line, cut at a word boundary.
    pub snippet: String,
    pub score: f32,
}

/// What `rlhf browse index` writes beside the tantivy files, so that opening a wrong folder
/// fails with a clear message.
const MANIFEST: &str = "rlhf-index.json";

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    documents: u64,
    source: String,
}

/// Characters of a result's snippet at most.
pub const SNIPPET_CHARS: usize = 48;

/// A BM25 index of documents.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    url: Field,
    title: Field,
    body: Field,
}

fn schema() -> (Schema, Field, Field, Field) {
    let mut sb = Schema::builder();
    let url = sb.add_text_field("url", STRING | STORED);
    let title = sb.add_text_field("title", TEXT | STORED);
    let body = sb.add_text_field("body", TEXT | STORED);
    (sb.build(), url, title, body)
}

impl SearchIndex {
    /// An index held in memory.
    pub fn in_ram(docs: &[Document]) -> Result<Self> {
        let (schema, ..) = schema();
        Self::fill(Index::create_in_ram(schema), docs)
    }

    /// Creates an index in the empty (or missing) folder `dir`.
    pub fn create(dir: &Path, docs: &[Document], source: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| BrowseError::io("create", dir, e))?;
        let busy = std::fs::read_dir(dir)
            .map_err(|e| BrowseError::io("read", dir, e))?
            .next()
            .is_some();
        if busy {
            return Err(BrowseError::BadIndex {
                path: dir.to_path_buf(),
                problem: "the output folder is not empty; choose a new one".into(),
            });
        }
        let (schema, ..) = schema();
        let index = Index::create_in_dir(dir, schema)?;
        let this = Self::fill(index, docs)?;
        let manifest = Manifest {
            format: 1,
            documents: docs.len() as u64,
            source: source.to_string(),
        };
        let path = dir.join(MANIFEST);
        let json = serde_json::to_string_pretty(&manifest).expect("plain fields serialise");
        std::fs::write(&path, json + "\n").map_err(|e| BrowseError::io("write", &path, e))?;
        Ok(this)
    }

    /// Opens an index written by [`SearchIndex::create`].
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        if !path.exists() {
            return Err(BrowseError::BadIndex {
                path: dir.to_path_buf(),
                problem: format!(
                    "no {MANIFEST}: not an index written by `rlhf browse index DIR --out {}`",
                    dir.display()
                ),
            });
        }
        Self::wrap(Index::open_in_dir(dir)?, dir)
    }

    fn fill(index: Index, docs: &[Document]) -> Result<Self> {
        let (url, title, body) = fields(&index, Path::new("(memory)"))?;
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 20_000_000)?;
        for d in docs {
            writer.add_document(
                doc!(url => d.url.clone(), title => d.title.clone(), body => d.text.clone()),
            )?;
        }
        writer.commit()?;
        Self::wrap(index, Path::new("(memory)"))
    }

    /// The index with its fields and a reader (opened after any commit, so it sees every
    /// document).
    fn wrap(index: Index, at: &Path) -> Result<Self> {
        let (url, title, body) = fields(&index, at)?;
        let reader = index.reader()?;
        Ok(Self {
            index,
            reader,
            url,
            title,
            body,
        })
    }

    /// Documents in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` best pages for `query` by BM25 over title and body. Query syntax errors are
    /// forgiven (the words that parse are used), as a search box would.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let parser = QueryParser::for_index(&self.index, vec![self.title, self.body]);
        let (q, _ignored) = parser.parse_query_lenient(query);
        let top = searcher.search(&q, &TopDocs::with_limit(k.max(1)).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let d = self.to_document(&searcher.doc(addr)?);
            hits.push(Hit {
                snippet: snippet(&d.text, SNIPPET_CHARS),
                url: d.url,
                title: d.title,
                score,
            });
        }
        Ok(hits)
    }

    /// The page at `url`, if the index has it.
    pub fn get(&self, url: &str) -> Result<Option<Document>> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.url, url),
            IndexRecordOption::Basic,
        );
        let top = searcher.search(&q, &TopDocs::with_limit(1).order_by_score())?;
        match top.first() {
            Some((_, addr)) => Ok(Some(self.to_document(&searcher.doc(*addr)?))),
            None => Ok(None),
        }
    }

    fn to_document(&self, d: &TantivyDocument) -> Document {
        let text = |f: Field| {
            d.get_first(f)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Document {
            url: text(self.url),
            title: text(self.title),
            text: text(self.body),
        }
    }
}

fn fields(index: &Index, at: &Path) -> Result<(Field, Field, Field)> {
    let schema = index.schema();
    let get = |name: &str| {
        schema.get_field(name).map_err(|_| BrowseError::BadIndex {
            path: at.to_path_buf(),
            problem: format!("the index has no field '{name}'"),
        })
    };
    Ok((get("url")?, get("title")?, get("body")?))
}

/// The start of `text`'s first non-empty line, at most `max` characters, cut at a word boundary
/// ("…" marks a cut).
pub fn snippet(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() <= max {
        return line.to_string();
    }
    let mut out = String::new();
    for w in line.split_whitespace() {
        if out.chars().count() + w.chars().count() + 1 > max {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out.push('…');
    out
}

/// Every `.txt` and `.md` file under `dir` (recursively, sorted), as documents: the URL is the
/// path relative to `dir`, the title the first Markdown heading or first line (else the file
/// name). Empty files are skipped; a file that is not UTF-8 is an error naming it.
pub fn read_folder(dir: &Path) -> Result<Vec<Document>> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    let mut docs = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).map_err(|e| BrowseError::io("read", &path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| BrowseError::BadIndex {
            path: path.clone(),
            problem: "not UTF-8 text".into(),
        })?;
        let Some(first) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
            continue;
        };
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        let stem = rel
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let heading = first.trim_start_matches('#').trim();
        let title = if heading.is_empty() {
            stem
        } else {
            heading.to_string()
        };
        docs.push(Document {
            url: rel.to_string_lossy().replace('\\', "/"),
            title,
            text,
        });
    }
    Ok(docs)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| BrowseError::io("read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BrowseError::io("read", dir, e))?;
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("txt" | "md" | "markdown")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> Vec<Document> {
        vec![
            Document {
                url: "a".into(),
                title: "Velmora".into(),
                text: "Velmora is a town.\nThe river Tasko flows through Velmora.".into(),
            },
            Document {
                url: "b".into(),
                title: "Kasto".into(),
                text: "Kasto is a town.\nKasto trades with Velmora.".into(),
            },
        ]
    }

    #[test]
    fn bm25_ranks_the_page_about_the_query_first_and_get_reads_it_back() {
        let idx = SearchIndex::in_ram(&docs()).unwrap();
        assert_eq!(idx.len(), 2);
        let hits = idx.search("Velmora river", 5).unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].title, "Velmora");
        assert!(hits[0].score > hits[1].score);
        assert_eq!(idx.search("Kasto", 5).unwrap().len(), 1);
        // Unbalanced syntax is forgiven.
        assert!(!idx.search("Velmora \"(", 5).unwrap().is_empty());
        assert_eq!(idx.get("b").unwrap().unwrap().title, "Kasto");
        assert!(idx.get("zzz").unwrap().is_none());
    }

    #[test]
    fn snippets_cut_at_words() {
        assert_eq!(snippet("\n  short line\nmore", 48), "short line");
        assert_eq!(snippet("one two three four", 9), "one two…");
    }

    #[test]
    fn folders_index_on_disk_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("docs");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.md"), "# Alpha\nThe alpha page.\n").unwrap();
        std::fs::write(src.join("sub/b.txt"), "Beta text here.\n").unwrap();
        std::fs::write(src.join("skip.bin"), "x").unwrap();
        std::fs::write(src.join("empty.txt"), "\n\n").unwrap();
        let docs = read_folder(&src).unwrap();
        let titles: Vec<_> = docs
            .iter()
            .map(|d| (d.url.as_str(), d.title.as_str()))
            .collect();
        assert_eq!(
            titles,
            vec![("a.md", "Alpha"), ("sub/b.txt", "Beta text here.")]
        );
        let out = tmp.path().join("index");
        SearchIndex::create(&out, &docs, "docs").unwrap();
        let idx = SearchIndex::open(&out).unwrap();
        assert_eq!(idx.search("beta", 3).unwrap()[0].url, "sub/b.txt");
        // A second create into the same folder refuses; opening a non-index explains.
        assert!(SearchIndex::create(&out, &docs, "docs").is_err());
        let err = SearchIndex::open(&src).err().unwrap().to_string();
        assert!(err.contains("rlhf browse index"), "{err}");
    }
}
