//! The iteration order of kmod's internal hash table.
//!
//! kmod's depmod walks two of its hash tables when it writes indexes: module names
//! (which decides the order of modules absent from `modules.order`) and exported
//! symbols (the line order of `modules.symbols`, the insertion order of
//! `modules.symbols.bin`). Byte-identical output therefore needs that order: buckets
//! chosen by Paul Hsieh's SuperFastHash of the key masked to a power-of-two bucket
//! count, buckets visited in index order, keys inside one bucket in `strcmp` order.

/// SuperFastHash over `key`, 16-bit reads little-endian (what kmod computes on the
/// x86/arm hosts depmod runs on).
pub fn superfast(key: &[u8]) -> u32 {
    let mut hash = key.len() as u32;
    let rem = key.len() & 3;
    let word = |i: usize| u16::from_le_bytes([key[i], key[i + 1]]) as u32;
    let mut i = 0;
    for _ in 0..key.len() / 4 {
        hash = hash.wrapping_add(word(i));
        let tmp = (word(i + 2) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        i += 4;
        hash = hash.wrapping_add(hash >> 11);
    }
    // kmod reads the tail through a (signed) `char`: sign-extend like C does.
    let signed = |b: u8| b as i8 as i32 as u32;
    match rem {
        3 => {
            hash = hash.wrapping_add(word(i));
            hash ^= hash << 16;
            hash ^= signed(key[i + 2]) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        2 => {
            hash = hash.wrapping_add(word(i));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        1 => {
            hash = hash.wrapping_add(signed(key[i]));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash = hash.wrapping_add(hash >> 6);
    hash
}

/// Sort `items` into the order kmod's hash table with `buckets` buckets (a power of
/// two) would iterate them, keyed by `key`.
pub fn sort_in_hash_order<T>(items: &mut [T], buckets: u32, key: impl Fn(&T) -> &str) {
    debug_assert!(buckets.is_power_of_two());
    items.sort_by_cached_key(|item| {
        let k = key(item);
        (superfast(k.as_bytes()) & (buckets - 1), k.as_bytes().to_vec())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_bucket_then_name() {
        let mut names = vec!["zeta", "alpha", "beta", "gamma", "delta"];
        sort_in_hash_order(&mut names, 1, |s| s);
        assert_eq!(names, ["alpha", "beta", "delta", "gamma", "zeta"]);
        // Lengths 0..=5 exercise every tail case; the values only need to be stable.
        let hashes: Vec<u32> = ["", "a", "ab", "abc", "abcd", "abcde"]
            .iter()
            .map(|s| superfast(s.as_bytes()))
            .collect();
        let mut dedup = hashes.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), hashes.len());
    }
}
