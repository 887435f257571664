//! Uploaded files: their size, and their type as declared and as their first bytes show it,
//! so an allowed-type list cannot be passed by renaming `shell.php` to `cat.png`.

use super::multipart::Part;

/// One uploaded file of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub field: String,
    pub filename: String,
    /// The part's `Content-Type`, lowercase, without parameters.
    pub declared: Option<String>,
    /// The type the content's magic bytes show, when recognised.
    pub sniffed: Option<&'static str>,
    pub size: usize,
}

impl FileInfo {
    pub fn from_part(p: &Part) -> Option<FileInfo> {
        Some(FileInfo {
            field: p.name.clone(),
            filename: p.filename.clone()?,
            declared: p.content_type.as_ref().map(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            }),
            sniffed: sniff(&p.data),
            size: p.data.len(),
        })
    }

    /// Whether the file passes an allowed-type list: the declared type must be listed, and
    /// the content must be of that type (a text type must carry no binary signature).
    pub fn type_allowed(&self, allowed: &[String]) -> bool {
        let Some(declared) = &self.declared else {
            return false;
        };
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(declared)) {
            return false;
        }
        match self.sniffed {
            Some(s) => s == declared || (s == "image/jpeg" && declared == "image/jpg"),
            None => {
                declared.starts_with("text/")
                    || declared == "application/json"
                    || declared == "application/octet-stream"
            }
        }
    }
}

/// The type a file's signature shows.
pub fn sniff(data: &[u8]) -> Option<&'static str> {
    const SIGNATURES: [(&[u8], &str); 12] = [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b", "application/gzip"),
        (b"MZ", "application/x-msdownload"),
        (b"\x7fELF", "application/x-elf"),
        (b"#!", "text/x-shellscript"),
        (b"<?php", "application/x-php"),
        (b"<?=", "application/x-php"),
    ];
    if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    SIGNATURES
        .iter()
        .find(|(sig, _)| data.starts_with(sig))
        .map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(declared: &str, data: &[u8]) -> FileInfo {
        FileInfo {
            field: "f".into(),
            filename: "x".into(),
            declared: Some(declared.into()),
            sniffed: sniff(data),
            size: data.len(),
        }
    }

    #[test]
    fn declared_type_must_match_the_content() {
        let allowed = vec!["image/png".to_owned(), "text/plain".to_owned()];
        assert!(file("image/png", b"\x89PNG\r\n\x1a\n....").type_allowed(&allowed));
        assert!(!file("image/png", b"<?php system($_GET[1]);").type_allowed(&allowed));
        assert!(!file("text/plain", b"\x7fELF\x02\x01").type_allowed(&allowed));
        assert!(file("text/plain", b"hello").type_allowed(&allowed));
        assert!(!file("application/pdf", b"%PDF-1.4").type_allowed(&allowed));
    }
}
