//! A client's Initial keys (RFC 9001 5.2, RFC 9369 3.3): derived from the Destination
//! Connection ID of its first Initial, so anyone on the path can read the Initials.
//! The cryptography is RustCrypto's (hkdf, sha2, aes, aes-gcm), none of it written here.

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

use super::Version;

/// The AEAD tag's length (AES-128-GCM).
pub const TAG: usize = 16;
/// The header protection sample's length.
pub const SAMPLE: usize = 16;

/// The keys that open a client's Initial packets.
pub struct Keys {
    aead: Aes128Gcm,
    iv: [u8; 12],
    hp: Aes128,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// HKDF-Expand-Label (RFC 8446 7.1) with an empty context.
fn expand_label(prk: &Hkdf<Sha256>, label: &str, out: &mut [u8]) {
    let full = 6 + label.len();
    let mut info = Vec::with_capacity(4 + full);
    info.extend((out.len() as u16).to_be_bytes());
    info.push(full as u8);
    info.extend(b"tls13 ");
    info.extend(label.as_bytes());
    info.push(0);
    prk.expand(&info, out)
        .expect("Initial key lengths are far below HKDF-SHA256's limit");
}

impl Keys {
    /// The client's Initial keys for a connection whose client chose `dcid`.
    pub fn client_initial(version: Version, dcid: &[u8]) -> Keys {
        let initial = Hkdf::<Sha256>::new(Some(version.salt()), dcid);
        let mut secret = [0u8; 32];
        expand_label(&initial, "client in", &mut secret);
        let client = Hkdf::<Sha256>::from_prk(&secret).expect("a 32-byte PRK");
        let (key_label, iv_label, hp_label) = version.labels();
        let (mut key, mut iv, mut hp) = ([0u8; 16], [0u8; 12], [0u8; 16]);
        expand_label(&client, key_label, &mut key);
        expand_label(&client, iv_label, &mut iv);
        expand_label(&client, hp_label, &mut hp);
        Keys {
            aead: Aes128Gcm::new(&key.into()),
            iv,
            hp: Aes128::new(&hp.into()),
        }
    }

    /// The header protection mask for a sample of the ciphertext.
    pub fn mask(&self, sample: &[u8; SAMPLE]) -> [u8; 16] {
        let mut block = (*sample).into();
        self.hp.encrypt_block(&mut block);
        block.into()
    }

    /// Opens packet number `pn`'s payload in place (`payload` ends with the tag);
    /// `header` is the unprotected header. The plaintext's length, or `None` when the
    /// packet is not authentic.
    pub fn open(&self, pn: u64, header: &[u8], payload: &mut [u8]) -> Option<usize> {
        let len = payload.len().checked_sub(TAG)?;
        let (text, tag) = payload.split_at_mut(len);
        let mut nonce = self.iv;
        for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= p;
        }
        self.aead
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                header,
                text,
                Tag::from_slice(tag),
            )
            .ok()
            .map(|()| len)
    }

    /// Seals `payload` in place for the tests' packet builder (the reverse of
    /// [`Keys::open`]); returns the tag.
    #[cfg(test)]
    pub fn seal(&self, pn: u64, header: &[u8], payload: &mut [u8]) -> [u8; TAG] {
        let mut nonce = self.iv;
        for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= p;
        }
        self.aead
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), header, payload)
            .expect("sealing cannot fail")
            .into()
    }
}
