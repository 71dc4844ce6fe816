//! Secret bytes: no `Debug`, no `Display`, zeroized on drop, exposed only
//! through [`Plaintext::expose`].

use zeroize::Zeroizing;

/// A secret value (a Secret's decoded `data` entry, a Vault field).
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    /// Takes ownership of `bytes`; they are zeroized when this is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Plaintext(Zeroizing::new(bytes))
    }

    pub fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Self {
        Plaintext(bytes)
    }

    /// Copies `bytes` into a new zeroizing buffer.
    pub fn copy_from(bytes: &[u8]) -> Self {
        let mut v = Zeroizing::new(Vec::with_capacity(bytes.len()));
        v.extend_from_slice(bytes);
        Plaintext(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret bytes. Callers must not log, format or store them outside
    /// a zeroizing buffer, except where they are the admission answer.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Clone for Plaintext {
    fn clone(&self) -> Self {
        Plaintext::copy_from(&self.0)
    }
}

/// Compile-time proof that a type has no `Debug`: with a `Debug` impl,
/// `<T as AmbiguousIfDebug<_>>::check()` would be ambiguous and the crate
/// would not build. Modules that hold key material assert their own types
/// (see `keys.rs`, `cluster.rs`), so this file stays the leaf they build on.
#[allow(dead_code)]
pub(crate) trait AmbiguousIfDebug<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfDebug<()> for T {}
#[allow(dead_code)]
pub(crate) struct IsDebug;
impl<T: ?Sized + std::fmt::Debug> AmbiguousIfDebug<IsDebug> for T {}
/// Same for `Display`.
#[allow(dead_code)]
pub(crate) trait AmbiguousIfDisplay<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfDisplay<()> for T {}
#[allow(dead_code)]
pub(crate) struct IsDisplay;
impl<T: ?Sized + std::fmt::Display> AmbiguousIfDisplay<IsDisplay> for T {}

const _: fn() = || {
    <Plaintext as AmbiguousIfDebug<_>>::check();
    <Plaintext as AmbiguousIfDisplay<_>>::check();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_exposes_bytes() {
        let p = Plaintext::copy_from(b"s3cr3t");
        assert_eq!(p.expose(), b"s3cr3t");
        assert_eq!(p.len(), 6);
        let q = p.clone();
        drop(p);
        assert_eq!(q.expose(), b"s3cr3t");
    }
}
