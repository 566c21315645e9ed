# A reduced CrossEarth mmseg config (the official model layout with the sizes of the engine's
# "tiny" preset), for converting a small checkpoint in the plugin tests. Read by the engine's
# config reader, never executed by the tests.
crop_size = (128, 128)
embed = 192
feat = 64
model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(
        type="SegDataPreProcessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        size=crop_size,
        bgr_to_rgb=True,
    ),
    backbone=dict(
        type="ReinsDinoVisionTransformer",
        reins_config=dict(
            type="LoRAReins",
            token_length=10,
            embed_dims=embed,
            num_layers=4,
            patch_size=16,
            link_token_to_query=True,
            lora_dim=4,
            query_dims=feat,
        ),
        patch_size=16,
        embed_dim=embed,
        depth=4,
        num_heads=3,
        mlp_ratio=4,
        img_size=128,
        ffn_layer="mlp",
        init_values=1e-05,
        out_indices=[0, 1, 2, 3],
    ),
    decode_head=dict(
        type="ReinMask2FormerHead",
        replace_query_feat=True,
        in_channels=[embed, embed, embed, embed],
        strides=[4, 8, 16, 32],
        feat_channels=feat,
        out_channels=feat,
        num_classes=3,
        num_queries=10,
        num_transformer_feat_level=3,
        pixel_decoder=dict(
            type="mmdet.MSDeformAttnPixelDecoder",
            num_outs=3,
            norm_cfg=dict(type="GN", num_groups=32),
            encoder=dict(
                num_layers=2,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=feat, num_heads=4, num_levels=3, num_points=4),
                    ffn_cfg=dict(embed_dims=feat, feedforward_channels=128),
                ),
            ),
            positional_encoding=dict(num_feats=feat // 2, normalize=True),
        ),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=feat // 2, normalize=True),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=feat, num_heads=4),
                cross_attn_cfg=dict(embed_dims=feat, num_heads=4),
                ffn_cfg=dict(embed_dims=feat, feedforward_channels=128),
            ),
        ),
    ),
    test_cfg=dict(mode="whole"),
)
