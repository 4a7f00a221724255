# Device tests for keypin.ed25519: RFC 8032 section 7.1 vectors, SHA-512, malformed input.
# Signatures made by `cryptography` are checked in tests/cli/test_cli_signer.py.
from binascii import unhexlify as H

from keypin import ed25519
from keypin.ed25519 import verify

_M1024 = (
    "08b8b2b733424243760fe426a4b54908"
    "632110a66c2f6591eabd3345e3e4eb98"
    "fa6e264bf09efe12ee50f8f54e9f77b1"
    "e355f6c50544e23fb1433ddf73be84d8"
    "79de7c0046dc4996d9e773f4bc9efe57"
    "38829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c"
    "941efb65d57a338bbd2e26640f89ffbc"
    "1a858efcb8550ee3a5e1998bd177e93a"
    "7363c344fe6b199ee5d02e82d522c4fe"
    "ba15452f80288a821a579116ec6dad2b"
    "3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9"
    "a39ce767967ed628c6ad573cb116dbef"
    "efd75499da96bd68a8a97b928a8bbc10"
    "3b6621fcde2beca1231d206be6cd9ec7"
    "aff6f6c94fcd7204ed3455c68c83f4a4"
    "1da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a9"
    "4a7c1958d1f8ada5d0532ed8a5aa3fb2"
    "d17ba70eb6248e594e1a2297acbbb39d"
    "502f1a8c6eb6f1ce22b3de1a1f40cc24"
    "554119a831a9aad6079cad88425de6bd"
    "e1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553"
    "878ad575f9fad878e80a0c9ba63bcbcc"
    "2732e69485bbc9c90bfbd62481d9089b"
    "eccf80cfe2df16a2cf65bd92dd597b07"
    "07e0917af48bbb75fed413d238f5555a"
    "7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b"
    "82b0ce26401d2e22f04d83d1255dc51a"
    "ddd3b75a2b1ae0784504df543af8969b"
    "e3ea7082ff7fc9888c144da2af58429e"
    "c96031dbcad3dad9af0dcbaaaf268cb8"
    "fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1"
    "ba5e43f1bca32301651339e22904cc8c"
    "42f58c30c04aafdb038dda0847dd988d"
    "cda6f3bfd15c4b4c4525004aa06eeff8"
    "ca61783aacec57fb3d1f92b0fe2fd1a8"
    "5f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927"
    "094b2db68d6f903b68401adebf5a7e08"
    "d78ff4ef5d63653a65040cf9bfd4aca7"
    "984a74d37145986780fc0b16ac451649"
    "de6188a7dbdf191f64b5fc5e2ab47b57"
    "f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1"
    "b7b750dfc7598d5d5011fd2dcc5600a3"
    "2ef5b52a1ecc820e308aa342721aac09"
    "43bf6686b64b2579376504ccc493d97e"
    "6aed3fb0f9cd71a43dd497f01f17c0e2"
    "cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041"
    "e989f7914f90cc2c7fff357876e506b5"
    "0d334ba77c225bc307ba537152f3f161"
    "0e4eafe595f6d9d90d11faa933a15ef1"
    "369546868a7f3a45a96768d40fd9d034"
    "12c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e"
    "4dc1ffc872eeee475a64dfac86aba41c"
    "0618983f8741c5ef68d3a101e8a3b8ca"
    "c60c905c15fc910840b94c00a0b9d0"
)

# (secret key, public key, message, signature), RFC 8032 section 7.1: TEST 1, 2, 3, 1024
RFC = (
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ("f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
     "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e", _M1024,
     "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03"),
)
_P = 2 ** 255 - 19
_L = 2 ** 252 + 27742317777372353535851937790883648493


def _v(i):
    _, pk, m, s = RFC[i]
    return H(pk), H(m), H(s)


def test_rfc8032_vectors():
    for i in range(len(RFC)):
        pk, m, s = _v(i)
        assert verify(pk, m, s) is True, i
    assert len(_v(3)[1]) == 1023


def test_buffers_of_any_kind():
    pk, m, s = _v(2)
    assert verify(bytearray(pk), memoryview(m), memoryview(bytearray(s)))


def test_tampering_refused():
    for i in range(len(RFC)):
        pk, m, s = _v(i)
        for j in (0, 31, 32, 63):  # R and S, first and last byte
            b = bytearray(s)
            b[j] ^= 1
            assert not verify(pk, m, bytes(b)), (i, j)
        assert not verify(pk, m + b"\x00", s), i
        if m:
            b = bytearray(m)
            b[-1] ^= 0x80
            assert not verify(pk, bytes(b), s), i
        other = _v((i + 1) % len(RFC))[0]
        assert not verify(other, m, s), i


def test_wrong_lengths_refused():
    pk, m, s = _v(1)
    for a, b in ((pk[:31], s), (pk + b"\x00", s), (pk, s[:63]), (pk, s + b"\x00"), (b"", b"")):
        assert verify(a, m, b) is False


def test_non_canonical_s_refused():
    # S + L is the same scalar mod L (signature malleability): must be refused
    for i in range(len(RFC)):
        pk, m, s = _v(i)
        big = int.from_bytes(s[32:], "little") + _L
        assert not verify(pk, m, s[:32] + big.to_bytes(32, "little")), i
    pk, m, s = _v(0)
    for bad in (_L, _L + 1, 2 ** 256 - 1):
        assert not verify(pk, m, s[:32] + bad.to_bytes(32, "little"))


def test_s_near_the_bound():
    # BoringSSL's vectors (David Benjamin): S just under L verifies, S just above is refused
    pk = H("100fdf47fb94f1536a4f7c3fda27383fa03375a8f527c537e6f1703c47f94f86")
    assert verify(pk, H("124e583f8b8eca58bb29c271b41d36986bbc45541f8e51f9cb0133eca447601e"),
                  H("dac119d6ca87fc59ae611c157048f4d4fc932a149dbe20ec6effd1436abf83ea"
                    "05c7df0fef06147241259113909bc71bd3c53ba4464ffcad3c0968f2ffffff0f"))
    assert not verify(pk, H("6a0bc2b0057cedfc0fa2e3f7f7d39279b30f454a69dfd1117c758d86b19d85e0"),
                      H("0971f86d2c9c78582524a103cb9cf949522ae528f8054dc20107d999be673ff4"
                        "e25ebf2f2928766b1248bec6e91697775f8446639ede46ad4df4053000000010"))


def test_bad_public_key_encodings_refused():
    _, m, s = _v(0)
    bad = (
        _P,                   # y = p: not canonical (y must be < p)
        _P + 1,               # y = p + 1 (would be y = 1)
        2 ** 255 - 1,         # y = 2^255 - 1 > p
        2,                    # y = 2: x^2 is not a square, no point
        1 | (1 << 255),       # y = 1 gives x = 0: the sign bit must be 0
        (2 ** 255 - 1) | (1 << 255),
    )
    for y in bad:
        pk = y.to_bytes(32, "little")
        assert ed25519._decode(pk) is None, y
        assert verify(pk, m, s) is False, y


def test_sha512():
    # FIPS 180-4 "abc", the empty string, and lengths around the 112/128-byte padding edges
    def msg(n):
        return b"abc" if n == 3 else bytes((i * 7) & 255 for i in range(n))
    want = {
        0: "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        3: "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        111: "d2026b9857418e96d800f55017d1c1566c027453ff240da88f0a25558fabf5d6ffbe00bb14bc04f120af1cac53f21cb4a81765140b9249f52aaab4935079dd94",
        112: "4dc754b8985c03b8015b1efd61af5c05828b6d07eecda8d90dd5863f7704bd375905932f2fbdeb4ee1b754a7778e4a0327e7d75b71ae95d1f619136e27564467",
        127: "78de13cc28717e3ee7a3cb21b2ecac6d201f32f4a81bc1becdf9de5126e1a0139e25784aeb8baf327cc32f98d54d20e80e61d4d6bff5b37872fdaa645a4f3886",
        128: "6e7f10bc87eacc3e98014eaade39e273285ba13c79231361c24c304a8d409018f543a28847fcc829b87fdde605caa5ab5fdb00e296737fa4687d5ee8d130ceea",
        239: "d29cefaac62d3e8acd367abe0804c702a4848773ada2ad537619bc5c29a3a1f0c7d58c639638ede6869cf43536bb0530c2e8cee6b29ac3999e1216b6e88bab4f",
        240: "44f1b40dcf17562fc7119b65ea16035838ccb0438092ef3c7ba8011fda5448d6ccff715c5d17e4e399154938c8e89be6cf724018868cac11f383709af4e0d0e5",
    }
    for n, digest in want.items():
        assert ed25519._sha512(msg(n)) == H(digest), n


# the 8 points of small order (order 1, 2, 4, 8), canonical encodings, and non-canonical
# encodings of some of them (y + p): libsodium's blocklist
SMALL_ORDER = (
    "0100000000000000000000000000000000000000000000000000000000000000",  # the identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4 ("-0": non-canonical)
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1: the identity again
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p (0): order 4
)


def test_small_order_and_non_canonical_keys_refused():
    # issue 12.5: with the identity as public key, R = identity and S = 0 "verify" any message
    forged = H(SMALL_ORDER[0]) + bytes(32)
    for hx in SMALL_ORDER:
        pk = H(hx)
        try:
            ed25519.check_key(pk)
        except ValueError:
            pass
        else:
            raise AssertionError("weak key accepted: " + hx)
        for msg in (b"", b"any update"):
            assert verify(pk, msg, forged) is False, hx
            assert verify(pk, msg, pk + bytes(32)) is False, hx
    for i in range(len(RFC)):  # real keys pass
        assert ed25519.check_key(_v(i)[0])
