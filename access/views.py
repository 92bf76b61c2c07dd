"""The token endpoint (kept apart from ``access.auth``, which DRF's settings import before its views exist)."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from access.auth import token_expires_at


class ObtainTokenView(APIView):
    """A fresh token for a username and password; the user's previous token stops working."""

    authentication_classes = []
    permission_classes = [AllowAny]
    serializer_class = AuthTokenSerializer

    @extend_schema(
        request=AuthTokenSerializer,
        responses=inline_serializer(
            "Token", {"token": serializers.CharField(), "expires_at": serializers.DateTimeField(allow_null=True)}
        ),
    )
    def post(self, request):
        payload = AuthTokenSerializer(data=request.data, context={"request": request})
        payload.is_valid(raise_exception=True)
        user = payload.validated_data["user"]
        with transaction.atomic():
            Token.objects.filter(user=user).delete()
            token = Token.objects.create(user=user)
        return Response({"token": token.key, "expires_at": token_expires_at(token)})
